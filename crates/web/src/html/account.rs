//! Sign up, log in, log out.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{alert, csrf_field};
use super::{CsrfForm, Ctx, HtmlError, local_path, login_cookies};
use crate::client::Client;
use crate::error::{ApiError, set_retry_after};
use crate::service;
use crate::state::AppState;

/// `?next=` of the log-in and sign-up pages.
#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    /// Where to go after logging in (a local path).
    next: Option<String>,
}

fn next_of(q: Result<Query<NextQuery>, QueryRejection>) -> Option<String> {
    let next = q.ok()?.0.next?;
    local_path(Some(&next)).map(str::to_owned)
}

fn signup_form(ctx: &Ctx, username: &str, display_name: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Create your account" }
        form.card method="post" action="/signup" {
            (alert(error))
            (csrf_field(&ctx.csrf.token))
            label for="username" { "Username" }
            input #username type="text" name="username" value=(username) required minlength="3" maxlength="30"
                pattern="[A-Za-z0-9_]{3,30}" autocomplete="username" autocapitalize="none" spellcheck="false"
                autofocus;
            p.muted.small { "3 to 30 letters, digits or underscores." }
            label for="display_name" { "Display name " span.muted { "(optional)" } }
            input #display_name type="text" name="display_name" value=(display_name)
                maxlength=(service::MAX_DISPLAY_NAME) autocomplete="name";
            label for="password" { "Password" }
            input #password type="password" name="password" required minlength="8" maxlength="128"
                autocomplete="new-password";
            p.muted.small { "At least 8 characters." }
            div.actions {
                button.btn type="submit" { "Sign up" }
                span.muted.small { "Have an account? " a href="/login" { "Log in" } }
            }
        }
    }
}

pub(super) async fn signup_page(ctx: Ctx) -> Response {
    if ctx.me.is_some() {
        return Redirect::to("/").into_response();
    }
    ctx.render(StatusCode::OK, "Sign up", signup_form(&ctx, "", "", None))
}

/// The sign-up form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignupForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
    username: String,
    password: String,
    /// Empty means "same as the username".
    #[serde(default)]
    display_name: Option<String>,
}

pub(super) async fn signup(
    State(state): State<AppState>,
    client: Client,
    ctx: Ctx,
    CsrfForm(form): CsrfForm<SignupForm>,
) -> Result<Response, HtmlError> {
    let display_name = form.display_name.as_deref().filter(|d| !d.trim().is_empty());
    let signed_up =
        service::signup(&state, &form.username, form.password.clone(), display_name, client).await;
    let user = match signed_up {
        Ok(user) => user,
        Err(
            e @ (ApiError::Invalid { .. }
            | ApiError::Conflict { .. }
            | ApiError::BadRequest { .. }
            | ApiError::TooManyAttempts { .. }),
        ) => {
            let (status, _) = e.status_and_code();
            let body =
                signup_form(&ctx, &form.username, display_name.unwrap_or_default(), Some(&e.to_string()));
            let mut response = ctx.render(status, "Sign up", body);
            set_retry_after(&mut response, &e);
            return Ok(response);
        }
        Err(e) => return Err(e.into()),
    };
    // The account exists; log straight in. Should that fail, the log-in page remains.
    match service::login(&state, &user.username, form.password, client, None).await {
        Ok(done) => Ok((AppendHeaders(login_cookies(&state, &done)), Redirect::to("/")).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "could not log in right after signup");
            Ok(Redirect::to("/login").into_response())
        }
    }
}

fn login_form(ctx: &Ctx, username: &str, next: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        h1 { "Log in" }
        form.card method="post" action="/login" {
            (alert(error))
            (csrf_field(&ctx.csrf.token))
            @if let Some(next) = next {
                input type="hidden" name="next" value=(next);
            }
            label for="username" { "Username" }
            input #username type="text" name="username" value=(username) required autocomplete="username"
                autocapitalize="none" spellcheck="false" autofocus[username.is_empty()];
            label for="password" { "Password" }
            input #password type="password" name="password" required autocomplete="current-password"
                autofocus[!username.is_empty()];
            div.actions {
                button.btn type="submit" { "Log in" }
                span.muted.small { "New here? " a href="/signup" { "Create an account" } }
            }
        }
    }
}

pub(super) async fn login_page(ctx: Ctx, query: Result<Query<NextQuery>, QueryRejection>) -> Response {
    let next = next_of(query);
    if ctx.me.is_some() {
        return Redirect::to(next.as_deref().unwrap_or("/")).into_response();
    }
    ctx.render(StatusCode::OK, "Log in", login_form(&ctx, "", next.as_deref(), None))
}

/// The log-in form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
    username: String,
    password: String,
    /// Where to go afterwards (only a local path is followed).
    #[serde(default)]
    next: Option<String>,
}

pub(super) async fn login(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ctx: Ctx,
    CsrfForm(form): CsrfForm<LoginForm>,
) -> Result<Response, HtmlError> {
    let next = local_path(form.next.as_deref());
    let device = crate::auth::device_token(&headers);
    match service::login(&state, &form.username, form.password, client, device.as_deref()).await {
        Ok(done) => {
            let to = next.unwrap_or("/");
            Ok((AppendHeaders(login_cookies(&state, &done)), Redirect::to(to)).into_response())
        }
        Err(e @ (ApiError::BadCredentials | ApiError::TooManyAttempts { .. })) => {
            let (status, _) = e.status_and_code();
            let body = login_form(&ctx, form.username.trim(), next, Some(&e.to_string()));
            let mut response = ctx.render(status, "Log in", body);
            set_retry_after(&mut response, &e);
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

/// The log-out form (the button in the top bar).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogoutForm {
    /// Checked by [`CsrfForm`].
    #[serde(rename = "csrf")]
    _csrf: String,
}

pub(super) async fn logout(
    State(state): State<AppState>,
    ctx: Ctx,
    CsrfForm(_): CsrfForm<LogoutForm>,
) -> Result<Response, HtmlError> {
    if let Some(me) = &ctx.me {
        service::logout(&state, &me.token).await?;
    }
    let headers = AppendHeaders([(header::SET_COOKIE, crate::auth::clear_session_cookie())]);
    Ok((headers, Redirect::to("/")).into_response())
}
