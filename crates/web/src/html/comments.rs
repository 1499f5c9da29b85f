//! Comments and like buttons on the HTML pages: a post page's comment list and
//! form, the like button and small comment form on feed cards, and the comment
//! forms' handlers (`POST /p/{id}/comments`, `POST
//! /p/{id}/comments/{comment}/delete`). Plain forms: the browser comes back to
//! where it was (the post's card on the feed, or its page). With the pages'
//! script, forms marked `data-inline` are sent in place and answered in JSON
//! ([`wants_json`]), without a page load.

use axum::Json;
use axum::extract::Path;
use axum::extract::State;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::layout::{Me, csrf_field, time_ago};
use super::{CsrfForm, HtmlError, LoggedIn, path_rejection};
use crate::comments::{self, CommentPage};
use crate::service::{self, PostView};
use crate::state::AppState;

/// "1 comment", "2 comments".
pub(crate) fn comments_label(n: i64) -> String {
    if n == 1 { "1 comment".to_owned() } else { format!("{n} comments") }
}

/// Whether a form's sender asked for JSON (the pages' script does): then its
/// handler answers with the API's JSON instead of a redirect.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("application/json")))
}

/// The like button of post `post_id`, `liked` or not; `back` is where the
/// browser returns.
pub(crate) fn like_button(csrf: &str, post_id: &str, liked: bool, back: Back) -> Markup {
    html! {
        form.like-form method="post" action={ "/p/" (post_id) "/like" } data-inline="like" {
            (csrf_field(csrf))
            input type="hidden" name="back" value=(back.as_str());
            @if liked {
                input type="hidden" name="action" value="unlike";
                button.btn.secondary type="submit" aria-pressed="true" { "♥ Unlike" }
            } @else {
                input type="hidden" name="action" value="like";
                button.btn type="submit" aria-pressed="false" { "♡ Like" }
            }
        }
    }
}

/// The comment form for post `post_id`; `back` is where the browser returns.
pub(crate) fn comment_form(csrf: &str, post_id: &str, back: Back) -> Markup {
    html! {
        form.comment-form method="post" action={ "/p/" (post_id) "/comments" } data-inline="comment" {
            (csrf_field(csrf))
            input type="hidden" name="back" value=(back.as_str());
            label.visually-hidden for={ "comment-" (post_id) } { "Add a comment" }
            input id={ "comment-" (post_id) } type="text" name="body" required maxlength=(data::MAX_COMMENT_CHARS)
                placeholder="Add a comment…" autocomplete="off";
            button.btn.secondary type="submit" { "Post" }
        }
    }
}

/// A post page's comments: the page of them, an "Older comments" link, the form.
pub(crate) fn comments_section(post: &PostView, page: &CommentPage, me: Option<&Me>, csrf: &str) -> Markup {
    html! {
        section.card.comments id="comments" aria-label="Comments" {
            h2 { (comments_label(post.comment_count)) }
            @if me.is_some() {
                (comment_form(csrf, &post.id, Back::Post))
            } @else {
                p.muted { a href={ "/login?next=/p/" (post.id) } { "Log in" } " to comment." }
            }
            @if page.comments.is_empty() {
                p.muted { "No comments yet." }
            }
            ul.comment-list {
                @for c in &page.comments {
                    li.comment id={ "c" (c.id) } {
                        a.who href={ "/u/" (c.author.username) } { strong { (c.author.display_name) } }
                        " "
                        span.body { (c.body) }
                        div.meta {
                            (time_ago(&c.created_at))
                            @if c.can_delete == Some(true) {
                                form method="post" action={ "/p/" (post.id) "/comments/" (c.id) "/delete" } {
                                    (csrf_field(csrf))
                                    button.link type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(cursor) = &page.next_cursor {
                p.pager {
                    a.btn.secondary href={ "/p/" (post.id) "?comments=" (cursor) "#comments" } rel="next" { "Older comments" }
                }
            }
        }
    }
}

/// Where a comment form sends the browser back to: only these two places, so a
/// form cannot be made to redirect anywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Back {
    /// The home feed, at the post's card.
    Feed,
    /// The post's own page, at its comments.
    Post,
}

impl Back {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Back::Feed => "feed",
            Back::Post => "post",
        }
    }

    /// Where to send the browser after acting on post `post_id`; `anchor` is the
    /// part of the post's page to show (`comments`), if any.
    pub(crate) fn url(self, post_id: i64, anchor: Option<&str>) -> String {
        match (self, anchor) {
            (Back::Feed, _) => format!("/#p{post_id}"),
            (Back::Post, Some(anchor)) => format!("/p/{post_id}#{anchor}"),
            (Back::Post, None) => format!("/p/{post_id}"),
        }
    }
}

/// The comment form's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommentForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
    /// The comment's text.
    body: String,
    /// Where to go afterwards (the post's page when absent).
    back: Option<Back>,
}

pub(super) async fn create(
    State(state): State<AppState>,
    LoggedIn { me, .. }: LoggedIn,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    CsrfForm(form): CsrfForm<CommentForm>,
) -> Result<Response, HtmlError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let id = service::parse_post_id(&raw)?;
    let comment = comments::create(&state, me.id, id, &form.body).await?;
    if wants_json(&headers) {
        // The comment, and the post's count as it now stands (for the card).
        /// The inline answer: the comment and its post's count.
        #[derive(Serialize)]
        struct Answer<'a> {
            /// The comment, as the API shows it.
            #[serde(flatten)]
            comment: &'a comments::CommentView,
            /// The post's comments now (absent if the post could not be read).
            comment_count: Option<i64>,
        }
        let comment_count = service::post_by_id(&state, id).await.map(|p| p.comment_count).ok();
        return Ok(Json(Answer { comment: &comment, comment_count }).into_response());
    }
    Ok(Redirect::to(&form.back.unwrap_or(Back::Post).url(id.get(), Some("comments"))).into_response())
}

/// The delete button's form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
}

pub(super) async fn delete(
    State(state): State<AppState>,
    LoggedIn { me, .. }: LoggedIn,
    path: Result<Path<(String, String)>, PathRejection>,
    CsrfForm(_): CsrfForm<DeleteForm>,
) -> Result<Response, HtmlError> {
    let Path((post, comment)) = path.map_err(path_rejection)?;
    let post = service::parse_post_id(&post)?;
    let comment = comments::parse_comment_id(&comment)?;
    comments::delete(&state, me.id, comment).await?;
    Ok(Redirect::to(&Back::Post.url(post.get(), Some("comments"))).into_response())
}
