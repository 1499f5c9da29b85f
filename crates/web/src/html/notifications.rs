//! `/notifications`: the signed-in user's notifications, newest first; visiting
//! it marks those it shows (and any older) read.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use data::NotificationKind;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::time_ago;
use super::{HtmlError, LoggedIn, query_rejection};
use crate::notifications::{self, NotificationView};
use crate::service;
use crate::state::AppState;

/// `?cursor=` of the page (other parameters are ignored).
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    /// Opaque position from an "Older" link.
    cursor: Option<String>,
}

/// `GET /notifications`.
pub(super) async fn page(
    State(state): State<AppState>,
    LoggedIn { me, mut ctx }: LoggedIn,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, HtmlError> {
    let Query(q) = query.map_err(query_rejection)?;
    let cursor = service::parse_cursor(q.cursor.as_deref())?;
    let page = notifications::page(&state, me.id, cursor, service::DEFAULT_LIMIT).await?;
    // Seen now: up to the newest shown, so one delivered meanwhile stays unread.
    let newest_unread =
        page.notifications.iter().filter(|n| !n.read).filter_map(|n| n.id.parse::<i64>().ok()).max();
    if let Some(up_to) = newest_unread {
        let marked = notifications::mark_read(&state, me.id, Some(up_to)).await?;
        if let Some(me) = ctx.me.as_mut() {
            me.unread = Some(marked.unread);
        }
    }
    let body = html! {
        h1 { "Notifications" }
        @if page.notifications.is_empty() {
            div.card.muted {
                @if cursor.is_none() { "Nothing yet. When someone follows you, or likes or comments on your posts, you will see it here." }
                @else { "No older notifications." }
            }
        } @else {
            ul.card.notifications {
                @for n in &page.notifications {
                    (item(n))
                }
            }
        }
        @if let Some(cursor) = &page.next_cursor {
            p.pager { a.btn.secondary href={ "/notifications?cursor=" (cursor) } { "Older" } }
        }
    };
    Ok(ctx.render(StatusCode::OK, "Notifications", body))
}

/// One notification: who, what, when; unread ones marked "new".
fn item(n: &NotificationView) -> Markup {
    html! {
        li.notification.unread[!n.read] {
            @if let Some(actor) = &n.actor {
                a.who href={ "/u/" (actor.username) } { strong { (actor.display_name) } }
            } @else {
                "Someone"
            }
            " "
            @match (n.kind, &n.post_id) {
                (NotificationKind::Follow, _) => { "started following you" }
                (NotificationKind::Like, Some(post)) => { "liked " a href={ "/p/" (post) } { "your post" } }
                (NotificationKind::Comment, Some(post)) => {
                    "commented on " a href={ "/p/" (post) "#comments" } { "your post" }
                }
                (_, None) => { "did something" }
            }
            " "
            span.muted.small { "· " (time_ago(&n.created_at)) }
            @if !n.read {
                " " span.badge { "new" }
            }
        }
    }
}
