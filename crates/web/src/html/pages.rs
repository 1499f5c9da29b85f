//! The home feed, profiles, posts and the new-post page.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{
    PROCESSING_REFRESH_SECS, csrf_field, is_processing, new_post_form, post_card, post_list,
};
use super::{CsrfForm, Ctx, HtmlError, LoggedIn, path_rejection, query_rejection};
use crate::edges::MediaUrls;
use crate::service;
use crate::state::AppState;

/// `?cursor=` of paged pages (other parameters are ignored).
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    /// Opaque position from an "Older posts" link.
    cursor: Option<String>,
}

fn cursor_of(q: Result<Query<PageQuery>, QueryRejection>) -> Result<Option<data::PostId>, HtmlError> {
    let Query(q) = q.map_err(query_rejection)?;
    Ok(service::parse_cursor(q.cursor.as_deref())?)
}

pub(super) async fn home(
    State(state): State<AppState>,
    ctx: Ctx,
    media: MediaUrls,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, HtmlError> {
    let Some(me) = &ctx.me else {
        let body = html! {
            section.hero {
                h1 { "Millions" }
                p.muted { "Share moments with the people you follow. Post, follow, like — and watch your feed fill up." }
                div.actions {
                    a.btn href="/signup" { "Sign up" }
                    a.btn.secondary href="/login" { "Log in" }
                }
            }
        };
        return Ok(ctx.render(StatusCode::OK, "Welcome", body));
    };
    let cursor = cursor_of(query)?;
    let feed = service::home_feed(&state, &media, me.id, cursor, service::DEFAULT_LIMIT).await?;
    let body = html! {
        @if cursor.is_none() {
            h1 { "Hi, " (me.display_name) }
            (new_post_form(&ctx.csrf.token, "", None, false, state.config().media.max_upload_bytes))
            h2 { "Your feed" }
        } @else {
            h1 { "Your feed" }
        }
        (post_list(&feed, "/", Some(me), html! {
            "Nothing here yet. Write your first post above, or find people to follow."
        }))
    };
    Ok(ctx.render(StatusCode::OK, "Home", body))
}

pub(super) async fn profile(
    State(state): State<AppState>,
    ctx: Ctx,
    media: MediaUrls,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, HtmlError> {
    let Path(username) = path.map_err(path_rejection)?;
    let cursor = cursor_of(query)?;
    let me = ctx.me.as_ref();
    let user = service::profile(&state, &username, me.map(|m| m.id)).await?;
    if user.username != username {
        // `/u/Alice` and `/u/alice` are the same page; keep one address.
        return Ok(Redirect::permanent(&format!("/u/{}", user.username)).into_response());
    }
    let posts = service::user_posts(&state, &media, &user.username, cursor, service::DEFAULT_LIMIT).await?;
    let own = me.is_some_and(|m| m.username == user.username);
    let initial = user.display_name.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default();
    let base = format!("/u/{}", user.username);
    let body = html! {
        section.card {
            div.profile-head {
                div.avatar aria-hidden="true" { (initial) }
                div {
                    h1 { (user.display_name) }
                    div.muted { "@" (user.username) }
                }
            }
            ul.counts {
                li { strong { (user.posts_count) } span.muted { @if user.posts_count == 1 { "post" } @else { "posts" } } }
                li { strong { (user.followers_count) } span.muted { @if user.followers_count == 1 { "follower" } @else { "followers" } } }
                li { strong { (user.following_count) } span.muted { "following" } }
            }
            div.actions {
                @if own {
                    a.btn.secondary href="/upload" { "New post" }
                } @else if me.is_some() {
                    @let following = user.followed_by_me.unwrap_or(false);
                    form method="post" action={ (base) "/follow" } {
                        (csrf_field(&ctx.csrf.token))
                        @if following {
                            input type="hidden" name="action" value="unfollow";
                            button.btn.secondary type="submit" { "Unfollow" }
                        } @else {
                            input type="hidden" name="action" value="follow";
                            button.btn type="submit" { "Follow" }
                        }
                    }
                } @else {
                    a.btn href={ "/login?next=" (base) } { "Log in to follow" }
                }
            }
        }
        h2 { "Posts" }
        (post_list(&posts, &base, me, html! { "No posts yet." }))
    };
    let title = format!("{} (@{})", user.display_name, user.username);
    Ok(ctx.render(StatusCode::OK, &title, body))
}

/// Which way a follow button goes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum FollowAction {
    /// Start following.
    Follow,
    /// Stop following.
    Unfollow,
}

/// The follow button's form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FollowForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
    action: FollowAction,
}

pub(super) async fn follow(
    State(state): State<AppState>,
    LoggedIn { me, .. }: LoggedIn,
    path: Result<Path<String>, PathRejection>,
    CsrfForm(form): CsrfForm<FollowForm>,
) -> Result<Response, HtmlError> {
    let Path(username) = path.map_err(path_rejection)?;
    let on = matches!(form.action, FollowAction::Follow);
    let result = service::set_follow(&state, me.id, &username, on).await?;
    Ok(Redirect::to(&format!("/u/{}", result.user.username)).into_response())
}

pub(super) async fn post(
    State(state): State<AppState>,
    ctx: Ctx,
    media: MediaUrls,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HtmlError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let id = service::parse_post_id(&raw)?;
    let me = ctx.me.as_ref();
    let p = service::post(&state, &media, id, me.map(|m| m.id)).await?;
    let like = html! {
        @if me.is_some() {
            form method="post" action={ "/p/" (p.id) "/like" } {
                (csrf_field(&ctx.csrf.token))
                @if p.liked_by_me.unwrap_or(false) {
                    input type="hidden" name="action" value="unlike";
                    button.btn.secondary type="submit" aria-pressed="true" { "♥ Unlike" }
                } @else {
                    input type="hidden" name="action" value="like";
                    button.btn type="submit" aria-pressed="false" { "♡ Like" }
                }
            }
        } @else {
            a.btn.secondary href={ "/login?next=/p/" (p.id) } { "Log in to like" }
        }
    };
    let body = post_card(&p, p.photo.as_ref(), true, me, like);
    let title = format!("Post by @{}", p.author.username);
    // While the photo is processed, the page reloads itself until it is ready.
    let head = html! {
        @if is_processing(&p) {
            meta http-equiv="refresh" content=(PROCESSING_REFRESH_SECS);
        }
    };
    Ok(ctx.render_with_head(StatusCode::OK, &title, head, body))
}

/// Which way a like button goes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum LikeAction {
    /// Like.
    Like,
    /// Take a like back.
    Unlike,
}

/// The like button's form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LikeForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
    action: LikeAction,
}

pub(super) async fn like(
    State(state): State<AppState>,
    LoggedIn { me, .. }: LoggedIn,
    path: Result<Path<String>, PathRejection>,
    CsrfForm(form): CsrfForm<LikeForm>,
) -> Result<Response, HtmlError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let id = service::parse_post_id(&raw)?;
    service::set_like(&state, me.id, id, matches!(form.action, LikeAction::Like)).await?;
    Ok(Redirect::to(&format!("/p/{}", id.get())).into_response())
}
