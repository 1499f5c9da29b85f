//! Editing one's profile (`/settings/profile`), and a user's followers and
//! following lists (`/u/{username}/followers`, `/u/{username}/following`).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{alert, csrf_field};
use super::{CsrfForm, Ctx, HtmlError, LoggedIn, path_rejection, query_rejection};
use crate::error::ApiError;
use crate::people::{self, MAX_BIO, Side};
use crate::service::{self, UserView};
use crate::state::AppState;

fn edit_form(ctx: &Ctx, display_name: &str, bio: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Edit your profile" }
        // The photo's form: multipart, its token first (checked before anything is stored).
        form.card method="post" action="/settings/avatar" enctype="multipart/form-data" {
            (csrf_field(&ctx.csrf.token))
            label for="avatar" { "Profile photo " span.muted { "(JPEG, PNG or WebP)" } }
            input #avatar type="file" name="photo" accept="image/jpeg,image/png,image/webp" required;
            div.actions { button.btn type="submit" { "Upload photo" } }
        }
        form.card method="post" action="/settings/profile" {
            (alert(error))
            (csrf_field(&ctx.csrf.token))
            label for="display_name" { "Display name" }
            input #display_name type="text" name="display_name" value=(display_name) required
                maxlength=(service::MAX_DISPLAY_NAME) autocomplete="name";
            label for="bio" { "Bio " span.muted { "(optional, up to " (MAX_BIO) " characters)" } }
            textarea #bio name="bio" maxlength=(MAX_BIO) { (bio) }
            div.actions {
                button.btn type="submit" { "Save" }
                @if let Some(me) = &ctx.me {
                    a.btn.secondary href={ "/u/" (me.username) } { "Cancel" }
                }
            }
        }
    }
}

/// `GET /settings/profile`: the form, filled with the profile as it is.
pub(super) async fn edit_page(
    State(state): State<AppState>,
    LoggedIn { me, ctx }: LoggedIn,
) -> Result<Response, HtmlError> {
    let user = service::profile_by_id(&state, me.id).await?;
    Ok(ctx.render(StatusCode::OK, "Edit profile", edit_form(&ctx, &user.display_name, &user.bio, None)))
}

/// The profile form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EditForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
    /// The shown name.
    display_name: String,
    /// The bio (empty clears it).
    #[serde(default)]
    bio: String,
}

/// `POST /settings/profile`: save, then show the profile; a bad value shows the
/// form again with what was typed and why (nothing saved).
pub(super) async fn edit(
    State(state): State<AppState>,
    LoggedIn { me, ctx }: LoggedIn,
    CsrfForm(form): CsrfForm<EditForm>,
) -> Result<Response, HtmlError> {
    match people::edit_profile(&state, me.id, Some(&form.display_name), Some(&form.bio)).await {
        Ok(user) => Ok(Redirect::to(&format!("/u/{}", user.username)).into_response()),
        Err(e @ (ApiError::Invalid { .. } | ApiError::BadRequest { .. })) => {
            let (status, _) = e.status_and_code();
            let body = edit_form(&ctx, &form.display_name, &form.bio, Some(&e.to_string()));
            Ok(ctx.render(status, "Edit profile", body))
        }
        Err(e) => Err(e.into()),
    }
}

/// `?cursor=` of the lists (other parameters are ignored).
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// Opaque position from an "More" link.
    cursor: Option<String>,
}

/// `GET /u/{username}/followers`.
pub(super) async fn followers(
    State(state): State<AppState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, HtmlError> {
    list(state, ctx, path, query, Side::Followers).await
}

/// `GET /u/{username}/following`.
pub(super) async fn following(
    State(state): State<AppState>,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, HtmlError> {
    list(state, ctx, path, query, Side::Following).await
}

async fn list(
    state: AppState,
    ctx: Ctx,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
    side: Side,
) -> Result<Response, HtmlError> {
    let Path(username) = path.map_err(path_rejection)?;
    let Query(q) = query.map_err(query_rejection)?;
    let cursor = people::parse_edge_cursor(q.cursor.as_deref())?;
    let viewer = ctx.me.as_ref().map(|m| m.id);
    // (The list's page shows no avatar: any photo URLs will do.)
    let user = service::profile(&state, &state.edges().urls(false), &username, viewer).await?;
    let page = people::edges(&state, &user.username, side, cursor, service::DEFAULT_LIMIT, viewer).await?;
    let (what, path) = match side {
        Side::Followers => ("Followers", "followers"),
        Side::Following => ("Following", "following"),
    };
    let base = format!("/u/{}/{path}", user.username);
    let body = html! {
        h1 {
            (what) " · "
            a href={ "/u/" (user.username) } { (user.display_name) }
        }
        @if page.users.is_empty() {
            div.card.muted {
                @match side {
                    Side::Followers => { "No followers yet." }
                    Side::Following => { "Not following anyone yet." }
                }
            }
        }
        @for u in &page.users {
            (person(u))
        }
        @if let Some(cursor) = &page.next_cursor {
            p.pager { a.btn.secondary href={ (base) "?cursor=" (cursor) } { "More" } }
        }
    };
    let title = format!("{what} of @{}", user.username);
    Ok(ctx.render(StatusCode::OK, &title, body))
}

/// One user of a list: name, shown name, bio, whether the viewer follows them.
fn person(u: &UserView) -> Markup {
    html! {
        article.card.person {
            a.who href={ "/u/" (u.username) } {
                strong { (u.display_name) }
                " "
                span.muted { "@" (u.username) }
            }
            @if u.followed_by_me == Some(true) {
                " " span.muted.small { "· you follow" }
            }
            @if !u.bio.is_empty() {
                p.bio { (u.bio) }
            }
        }
    }
}

/// `POST /settings/avatar`: the profile photo's form (multipart: `csrf`, then
/// `photo`). The token is checked before anything is stored; then the photo
/// goes through the upload pipeline and the browser to the profile.
pub(super) async fn avatar(
    State(state): State<AppState>,
    LoggedIn { me, .. }: LoggedIn,
    media: crate::edges::MediaUrls,
    request: axum::extract::Request,
) -> Result<Response, HtmlError> {
    use axum::extract::FromRequest as _;
    let headers = request.headers().clone();
    if !crate::body::is_multipart(&headers) {
        return Err(
            ApiError::UnsupportedMediaType("expected the photo form (multipart/form-data)".into()).into()
        );
    }
    let mut multipart = axum::extract::Multipart::from_request(request, &state)
        .await
        .map_err(crate::body::multipart_error)?;
    let upload =
        crate::api::read_upload_with(&mut multipart, state.config().media.max_upload_bytes, &["csrf"])
            .await?;
    let submitted = upload.other.iter().find(|(k, _)| k == "csrf").map_or("", |(_, v)| v.as_str());
    crate::auth::CsrfToken::verify(&headers, submitted)?;
    let Some(photo) = upload.photo.filter(|p| !p.is_empty()) else {
        return Err(ApiError::bad_request("missing_photo", "choose a photo to upload").into());
    };
    crate::avatars::set_avatar(&state, &media, me.id, photo).await?;
    Ok(Redirect::to(&format!("/u/{}", me.username)).into_response())
}
