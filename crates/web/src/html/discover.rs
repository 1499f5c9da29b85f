//! Finding people and photos: `/search` (the search form, its results, and
//! "suggested for you" below) and `/explore` (recent popular photos, a grid).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{alert, shown_image};
use super::{Ctx, HtmlError, query_rejection};
use crate::directory::{self, Suggested};
use crate::edges::MediaUrls;
use crate::error::ApiError;
use crate::service::{self, UserView};
use crate::state::AppState;

/// `?q=` of the search page (other parameters are ignored).
#[derive(Debug, Deserialize)]
pub(super) struct SearchParams {
    /// The start of a name; absent shows only the form and suggestions.
    q: Option<String>,
}

/// The search form, filled with what was typed.
fn search_form(q: &str) -> Markup {
    html! {
        form.card.search method="get" action="/search" role="search" {
            label for="q" { "Find people by username or name" }
            input #q type="search" name="q" value=(q) minlength=(directory::MIN_QUERY)
                maxlength=(directory::MAX_QUERY) required autocomplete="off";
            div.actions { button.btn type="submit" { "Search" } }
        }
    }
}

/// One user of a list: shown name, username, why suggested.
fn person(u: &UserView, note: Option<String>) -> Markup {
    html! {
        article.card.person {
            a.who href={ "/u/" (u.username) } {
                strong { (u.display_name) }
                " "
                span.muted { "@" (u.username) }
            }
            " " span.muted.small { (u.followers_count) " followers" }
            @if u.followed_by_me == Some(true) {
                " " span.muted.small { "· you follow" }
            }
            @if let Some(note) = note {
                p.small.muted { (note) }
            }
        }
    }
}

fn suggestion(s: &Suggested) -> Markup {
    let note = match s.mutual_count {
        Some(1) => "Followed by 1 person you follow".to_owned(),
        Some(n) => format!("Followed by {n} people you follow"),
        None => "Popular".to_owned(),
    };
    person(&s.user, Some(note))
}

/// `GET /search?q=`: the form; with `q`, the users found (a bad query shows
/// the form again, 400, with why); below, suggestions.
pub(super) async fn search_page(
    State(state): State<AppState>,
    ctx: Ctx,
    media: MediaUrls,
    query: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, HtmlError> {
    let Query(params) = query.map_err(query_rejection)?;
    let viewer = ctx.me.as_ref().map(|m| m.id);
    let typed = params.q.unwrap_or_default();
    let mut status = StatusCode::OK;
    let (error, found) = if typed.trim().is_empty() {
        (None, None)
    } else {
        match directory::parse_query(Some(&typed)) {
            Ok(q) => {
                let users = directory::search(&state, &media, &q, service::DEFAULT_LIMIT, viewer).await?;
                (None, Some(users))
            }
            Err(e @ (ApiError::BadRequest { .. } | ApiError::Invalid { .. })) => {
                status = e.status_and_code().0;
                (Some(e.to_string()), None)
            }
            Err(e) => return Err(e.into()),
        }
    };
    let suggested = directory::suggestions(&state, &media, viewer, 10).await?;
    let body = html! {
        h1 { "Find people" }
        (alert(error.as_deref()))
        (search_form(&typed))
        @if let Some(users) = &found {
            h2 { "Results" }
            @if users.is_empty() {
                div.card.muted { "No one's name starts with that." }
            }
            @for u in users {
                (person(u, None))
            }
        }
        h2 { "Suggested for you" }
        @if suggested.users.is_empty() {
            div.card.muted { "No suggestions yet." }
        }
        @for s in &suggested.users {
            (suggestion(s))
        }
        p { a.btn.secondary href="/explore" { "Explore photos" } }
    };
    Ok(ctx.render(status, "Find people", body))
}

/// `GET /explore`: the most liked photos of the last week, as a grid of
/// thumbnails linking to their posts.
pub(super) async fn explore_page(
    State(state): State<AppState>,
    ctx: Ctx,
    media: MediaUrls,
) -> Result<Response, HtmlError> {
    let explore = directory::explore(&state, &media, directory::EXPLORE_MAX).await?;
    let body = html! {
        h1 { "Explore" }
        @if explore.posts.is_empty() {
            div.card.muted { "No photos yet this week." }
        }
        div.grid.explore {
            @for p in &explore.posts {
                @if let Some(photo) = &p.photo {
                    @let image = photo.thumbnails.first().unwrap_or_else(|| shown_image(photo));
                    a.tile href={ "/p/" (p.id) } title={ "@" (p.author.username) " · " (p.like_count) " likes" } {
                        img src=(image.url) width=(image.width) height=(image.height) loading="lazy" decoding="async"
                            alt={ "Photo by @" (p.author.username) };
                    }
                }
            }
        }
    };
    Ok(ctx.render(StatusCode::OK, "Explore", body))
}
