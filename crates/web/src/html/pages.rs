//! The home feed, profiles, posts and the new-post page.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::comments::{Back, comment_form, comments_section, like_button, wants_json};
use super::layout::{
    PROCESSING_REFRESH_SECS, csrf_field, is_processing, new_post_form, post_card, post_list, post_list_with,
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
    let liked = service::liked_among(&state, me.id, &feed).await?;
    let csrf = ctx.csrf.token.as_str();
    let body = html! {
        @if cursor.is_none() {
            h1 { "Hi, " (me.display_name) }
            (new_post_form(&ctx.csrf.token, "", None, false, state.config().media.max_upload_bytes))
            h2 { "Your feed" }
        } @else {
            h1 { "Your feed" }
        }
        (post_list_with(&feed, "/", Some(me), html! {
            "Nothing here yet. Write your first post above, or find people to follow."
        }, &|p| like_button(csrf, &p.id, liked.contains(&p.id), Back::Feed), &|p| html! {
            ul.comment-list {}
            (comment_form(csrf, &p.id, Back::Feed))
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
    let user = service::profile(&state, &media, &username, me.map(|m| m.id)).await?;
    if user.username != username {
        // `/u/Alice` and `/u/alice` are the same page; keep one address.
        return Ok(Redirect::permanent(&format!("/u/{}", user.username)).into_response());
    }
    let posts = service::user_posts(
        &state,
        &media,
        &user.username,
        me.map(|m| m.id),
        service::PageSource::Cache,
        cursor,
        service::DEFAULT_LIMIT,
    )
    .await?;
    let own = me.is_some_and(|m| m.username == user.username);
    let initial = user.display_name.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default();
    let base = format!("/u/{}", user.username);
    let body = html! {
        section.card {
            div.profile-head {
                @if let Some(avatar) = &user.avatar {
                    @let img = crate::avatars::avatar_image(avatar, 128);
                    img.avatar src=(img.url) width="64" height="64" alt={ "@" (user.username) };
                } @else {
                    div.avatar aria-hidden="true" { (initial) }
                }
                div {
                    h1 { (user.display_name) }
                    div.muted { "@" (user.username) }
                }
            }
            @if !user.bio.is_empty() {
                p.bio { (user.bio) }
            }
            ul.counts {
                li { strong { (user.posts_count) } span.muted { @if user.posts_count == 1 { "post" } @else { "posts" } } }
                li { a href={ (base) "/followers" } { strong { (user.followers_count) } span.muted { @if user.followers_count == 1 { "follower" } @else { "followers" } } } }
                li { a href={ (base) "/following" } { strong { (user.following_count) } span.muted { "following" } } }
            }
            div.actions {
                @if own {
                    a.btn.secondary href="/upload" { "New post" }
                    a.btn.secondary href="/settings/profile" { "Edit profile" }
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
        @let photos: Vec<_> = posts.posts.iter().filter_map(|p| Some((p, p.photo(&posts.media)?))).collect();
        @if !photos.is_empty() {
            h2 { "Photos" }
            div.grid {
                @for (p, photo) in &photos {
                    @let thumb = photo.thumbnails.first().unwrap_or(&photo.original);
                    a href={ "/p/" (p.id) } {
                        img src=(thumb.url) width=(thumb.width) height=(thumb.height) loading="lazy" decoding="async"
                            alt=(if p.caption.trim().is_empty() { format!("Photo by @{}", p.author.username) } else { p.caption.clone() });
                    }
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

/// `?comments=` of a post page: where its comment list starts.
#[derive(Debug, Deserialize)]
pub(super) struct PostQuery {
    /// Opaque position from an "Older comments" link.
    comments: Option<String>,
}

pub(super) async fn post(
    State(state): State<AppState>,
    ctx: Ctx,
    media: MediaUrls,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PostQuery>, QueryRejection>,
) -> Result<Response, HtmlError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let id = service::parse_post_id(&raw)?;
    let Query(query) = query.map_err(query_rejection)?;
    let comments_cursor = service::parse_cursor(query.comments.as_deref())?;
    let me = ctx.me.as_ref();
    let p = service::post(&state, &media, id, me.map(|m| m.id)).await?;
    let comments =
        crate::comments::page(&state, id, comments_cursor, service::DEFAULT_LIMIT, me.map(|m| m.id)).await?;
    let like = html! {
        @if me.is_some() {
            (like_button(&ctx.csrf.token, &p.id, p.liked_by_me.unwrap_or(false), Back::Post))
        } @else {
            a.btn.secondary href={ "/login?next=/p/" (p.id) } { "Log in to like" }
        }
    };
    let own = me.is_some_and(|m| m.id.to_string() == p.author.id);
    let body = html! {
        (post_card(&p, p.photo.as_ref(), true, me, like))
        @if own {
            form.delete-post method="post" action={ "/p/" (p.id) "/delete" } {
                (csrf_field(&ctx.csrf.token))
                button.link type="submit" { "Delete this post" }
            }
        }
        (comments_section(&p, &comments, me, &ctx.csrf.token))
    };
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
    /// Where to go afterwards (the post's page when absent).
    back: Option<Back>,
}

pub(super) async fn like(
    State(state): State<AppState>,
    LoggedIn { me, .. }: LoggedIn,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    CsrfForm(form): CsrfForm<LikeForm>,
) -> Result<Response, HtmlError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let id = service::parse_post_id(&raw)?;
    let done = service::set_like(&state, me.id, id, matches!(form.action, LikeAction::Like)).await?;
    if wants_json(&headers) {
        return Ok(axum::Json(done).into_response());
    }
    Ok(Redirect::to(&form.back.unwrap_or(Back::Post).url(id.get(), None)).into_response())
}

/// The post page's delete button.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeletePostForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
}

/// `POST /p/{id}/delete`: the viewer deletes their post, then sees their profile.
pub(super) async fn delete(
    State(state): State<AppState>,
    LoggedIn { me, .. }: LoggedIn,
    path: Result<Path<String>, PathRejection>,
    CsrfForm(_): CsrfForm<DeletePostForm>,
) -> Result<Response, HtmlError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let id = service::parse_post_id(&raw)?;
    crate::post_deletion::delete_post(&state, me.id, id).await?;
    Ok(Redirect::to(&format!("/u/{}", me.username)).into_response())
}
