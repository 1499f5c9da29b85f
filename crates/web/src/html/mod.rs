//! Server-rendered HTML pages (maud), working with plain HTML forms and no JavaScript.
//!
//! Pages: `/`, `/signup`, `/login`, `/logout` (POST), `/u/{username}`,
//! `/u/{username}/follow` (POST), `/p/{id}`, `/p/{id}/like` (POST), `/p/{id}/delete`
//! (POST), `/p/{id}/comments`
//! (POST), `/p/{id}/comments/{comment}/delete` (POST), `/upload`.
//! `/u/{username}/followers`, `/u/{username}/following`, `/settings/avatar` (POST, multipart), `/settings/profile` (GET,
//! POST), `/notifications` (visiting it marks them read), `/search` (find people,
//! suggestions), `/explore` (recent popular photos).
//!
//! Every state-changing form carries the double-submit CSRF token ([`CsrfToken`]);
//! `CsrfForm` checks it before the form is even deserialized, so a forged form
//! changes nothing. The new-post form is multipart (it carries a photo): there the
//! token must arrive before the photo and is checked before the photo is read (see
//! `upload`). Failures render as HTML pages with the status of the [`ApiError`]
//! behind them.

mod account;
mod comments;
mod discover;
mod layout;
mod notifications;
mod pages;
mod people;
mod upload;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::de::DeserializeOwned;

use crate::auth::CsrfToken;
use crate::error::ApiError;
use crate::service;
use crate::state::AppState;
use crate::viewer::Viewer;

pub(crate) use layout::Me;

/// Routes of the HTML pages. `state` gives the limits and the photo URLs'
/// origin: `/upload` takes bodies up to [`crate::body::upload_body_limit`] (a photo),
/// and the pages' Content-Security-Policy lets images load from `media.public_base`
/// and from every CDN edge of `media.cdn`.
pub fn routes(state: &AppState) -> Router<AppState> {
    let upload_limit = crate::body::upload_body_limit(state);
    let csp = content_security_policy(&state.config().media.public_base, &state.edges().csp_sources());
    let csp = HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(FALLBACK_CSP));
    Router::new()
        .route("/", get(pages::home))
        .route("/signup", get(account::signup_page).post(account::signup))
        .route("/login", get(account::login_page).post(account::login))
        .route("/logout", post(account::logout))
        .route("/u/{username}", get(pages::profile))
        .route("/u/{username}/follow", post(pages::follow))
        .route("/u/{username}/followers", get(people::followers))
        .route("/u/{username}/following", get(people::following))
        .route("/settings/profile", get(people::edit_page).post(people::edit))
        .route("/settings/avatar", post(people::avatar).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/notifications", get(notifications::page))
        .route("/search", get(discover::search_page))
        .route("/explore", get(discover::explore_page))
        .route("/p/{id}", get(pages::post))
        .route("/p/{id}/like", post(pages::like))
        .route("/p/{id}/delete", post(pages::delete))
        .route("/static/app.js", get(script)) // SCRIPT_PATH
        .route("/p/{id}/comments", post(comments::create))
        .route("/p/{id}/comments/{comment}/delete", post(comments::delete))
        .route(
            "/upload",
            get(upload::upload_page).post(upload::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .method_not_allowed_fallback(|| async { HtmlError(ApiError::MethodNotAllowed) })
        .fallback(|| async { HtmlError(ApiError::NotFound("there is no page at this address")) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), with_viewer_menu))
        .layer(axum::middleware::map_response_with_state(csp, security_headers))
}

/// The pages' only script: progressive enhancement of the like buttons and
/// comment forms (every page works without it).
pub(crate) const SCRIPT: &str = include_str!("static/app.js");

/// Where [`SCRIPT`] is served (the route spells it out: the load balancer's
/// route scan reads literals).
pub(crate) const SCRIPT_PATH: &str = "/static/app.js";

/// `GET /static/app.js`: [`SCRIPT`], cacheable for a few minutes (its address is
/// not versioned, so not for long).
async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        SCRIPT,
    )
        .into_response()
}

/// The policy used should the configured one not make a header value (it always
/// does: [`media_source`] only lets plain host characters through).
const FALLBACK_CSP: &str = "default-src 'self'; img-src 'self' https: http: data:; style-src 'unsafe-inline'; \
     script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The pages' Content-Security-Policy: no script but our own ([`SCRIPT`], served
/// from this site, no inline script), styles inline only, and
/// images from this site (photos under `/media/`), from the photo URLs' origin
/// when `public_base` points elsewhere (a CDN), and from `edges` (every CDN
/// edge's `http://` and `https://` origin: a page names whichever is healthy).
fn content_security_policy(public_base: &str, edges: &[String]) -> String {
    let mut media = media_source(public_base).map(|s| format!(" {s}")).unwrap_or_default();
    for edge in edges {
        media.push(' ');
        media.push_str(edge);
    }
    format!(
        "default-src 'self'; img-src 'self' data:{media}; style-src 'unsafe-inline'; script-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The CSP source for photo URLs under `public_base`: `None` for a path on this
/// site, the origin (`https://cdn.example:8443`) for an absolute URL, the host for a
/// scheme-relative one (`//cdn.example/`). A host with anything but plain host
/// characters falls back to its whole scheme.
fn media_source(public_base: &str) -> Option<String> {
    let lower = public_base.to_ascii_lowercase();
    let (scheme, rest) = if let Some(rest) = lower.strip_prefix("https://") {
        ("https:", rest)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        ("http:", rest)
    } else if let Some(rest) = lower.strip_prefix("//") {
        ("", rest)
    } else {
        return None;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let plain = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    Some(match (plain, scheme) {
        (true, "") => host.to_owned(),
        (true, scheme) => format!("{scheme}//{host}"),
        (false, "") => "https: http:".to_owned(),
        (false, scheme) => scheme.to_owned(),
    })
}

/// Headers every HTML response carries: pages are per-viewer (never cached by a
/// shared cache), may not be framed, and run no script but this site's own.
async fn security_headers(State(csp): State<HeaderValue>, mut response: Response) -> Response {
    let h = response.headers_mut();
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("private, no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// A failure rendered as an HTML error page with the error's status.
#[derive(Debug)]
pub(crate) struct HtmlError(pub ApiError);

impl From<ApiError> for HtmlError {
    fn from(e: ApiError) -> HtmlError {
        HtmlError(e)
    }
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        let (status, code) = self.0.status_and_code();
        match &self.0 {
            ApiError::Internal { reason } => tracing::error!(%reason, "page failed"),
            ApiError::Unavailable { reason } => tracing::warn!(%reason, "dependency unavailable"),
            _ => tracing::debug!(code, "page refused"),
        }
        let page = ErrorPage { status, message: self.0.to_string() };
        let mut response = (status, layout::page(None, None, page.title(), page.body())).into_response();
        crate::error::set_retry_after(&mut response, &self.0);
        response.extensions_mut().insert(page);
        response
    }
}

/// What an error page says, kept on its response: [`with_viewer_menu`] renders
/// it again with the signed-in viewer's top bar (an error is made where the
/// viewer is not known).
#[derive(Debug, Clone)]
struct ErrorPage {
    /// The response's status.
    status: StatusCode,
    /// The error, for people.
    message: String,
}

impl ErrorPage {
    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    fn body(&self) -> maud::Markup {
        html! {
            div.card.error-page {
                h1 { (self.status.as_u16()) " · " (self.title()) }
                p { (self.message) }
                div.actions {
                    a.btn href="/" { "Go to the home page" }
                    @if self.status == StatusCode::FORBIDDEN {
                        span.muted.small { "Reload the page you came from and submit it again." }
                    }
                }
            }
        }
    }
}

/// An error page for a signed-in viewer keeps their top bar (their menu,
/// notifications, log-out): the page is rendered again with it. Only error
/// pages pay for the look-up; if it fails, the plain error page stands.
async fn with_viewer_menu(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let (uri, headers) = (request.uri().clone(), request.headers().clone());
    let response = next.run(request).await;
    let Some(page) = response.extensions().get::<ErrorPage>().cloned() else { return response };
    let mut head = Request::new(());
    *head.uri_mut() = uri;
    *head.headers_mut() = headers;
    let (mut parts, ()) = head.into_parts();
    let Ok(ctx) = Ctx::from_request_parts(&mut parts, &state).await else { return response };
    if ctx.me.is_none() {
        return response;
    }
    let mut again = ctx.render(page.status, page.title(), page.body());
    if let Some(retry) = response.headers().get(header::RETRY_AFTER) {
        again.headers_mut().insert(header::RETRY_AFTER, retry.clone());
    }
    again
}

/// What every page handler knows about the request: who is looking (if anyone)
/// and the CSRF token its forms must carry.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The logged-in viewer.
    pub me: Option<Me>,
    /// The token for forms; `csrf.fresh` means the response must set its cookie.
    pub csrf: CsrfToken,
    /// Whether cookies are `Secure` (the site is served over HTTPS).
    pub secure_cookies: bool,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = HtmlError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Viewer(session) = Viewer::from_request_parts(parts, state).await?;
        let csrf = match CsrfToken::from_request_parts(parts, state).await {
            Ok(t) => t,
            Err(never) => match never {},
        };
        let me = match session {
            Some(s) => match service::profile_by_id(state, s.user_id).await {
                Ok(u) => Some(Me {
                    id: u.user_id,
                    username: u.username.clone(),
                    display_name: u.display_name.clone(),
                    token: s.token,
                    unread: crate::notifications::badge(state, u.user_id).await,
                }),
                // A session whose user is gone is no session.
                Err(ApiError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        Ok(Ctx { me, csrf, secure_cookies: state.config().sessions.secure_cookies })
    }
}

impl Ctx {
    /// A full page with this viewer's top bar, setting the CSRF cookie if the token
    /// is new (every page may show the log-out form).
    pub fn render(&self, status: StatusCode, title: &str, body: maud::Markup) -> Response {
        self.render_with_head(status, title, html! {}, body)
    }

    /// [`Ctx::render`] with extra elements in the page's `<head>`.
    pub fn render_with_head(
        &self,
        status: StatusCode,
        title: &str,
        head: maud::Markup,
        body: maud::Markup,
    ) -> Response {
        let markup = layout::page_with_head(self.me.as_ref(), Some(&self.csrf.token), title, head, body);
        let mut response = (status, markup).into_response();
        if let Some(cookie) =
            self.csrf.set_cookie(self.secure_cookies).and_then(|c| HeaderValue::from_str(&c).ok())
        {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }
}

/// A request from a logged-in viewer; anyone else is sent (303) to `/login` before
/// anything else about the request is looked at.
#[derive(Debug, Clone)]
pub(crate) struct LoggedIn {
    /// The viewer.
    pub me: Me,
    /// The page context (for re-rendering forms).
    pub ctx: Ctx,
}

impl FromRequestParts<AppState> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ctx = Ctx::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        match ctx.me.clone() {
            Some(me) => Ok(LoggedIn { me, ctx }),
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

/// An `application/x-www-form-urlencoded` body whose `csrf` field matches the CSRF
/// cookie. The token is checked before the form is deserialized into `T` (which
/// must declare the `csrf` field too, as forms deny unknown fields): a forged or
/// stale form is a 403 whatever else it holds; a malformed one a 400.
#[derive(Debug)]
pub(crate) struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for CsrfForm<T> {
    type Rejection = HtmlError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        if !is_urlencoded_form(&headers) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a form body (application/x-www-form-urlencoded)".into(),
            )
            .into());
        }
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::bad_request("invalid_form", "the form could not be read")
            }
        })?;
        Ok(CsrfForm(csrf_checked_form(&headers, body).await?))
    }
}

/// Deserialize an urlencoded form `body` into `T` once its single `csrf` field
/// has been checked against the CSRF cookie in `headers`.
async fn csrf_checked_form<T: DeserializeOwned>(headers: &HeaderMap, body: Bytes) -> Result<T, HtmlError> {
    let Form(pairs) = Form::<Vec<(String, String)>>::from_request(form_request(body.clone()), &())
        .await
        .map_err(form_rejection)?;
    let mut tokens = pairs.iter().filter(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    let submitted = tokens.next().unwrap_or_default();
    if tokens.next().is_some() {
        return Err(ApiError::Csrf.into());
    }
    CsrfToken::verify(headers, submitted)?;
    let Form(value) = Form::<T>::from_request(form_request(body), &()).await.map_err(form_rejection)?;
    Ok(value)
}

fn is_urlencoded_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// A bare POST request carrying an already read form body, to deserialize it again.
fn form_request(body: Bytes) -> Request {
    let mut req = Request::new(Body::from(body));
    *req.method_mut() = Method::POST;
    req.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    req
}

fn form_rejection(r: FormRejection) -> ApiError {
    match r {
        FormRejection::FailedToDeserializeForm(e) => ApiError::bad_request("invalid_form", e.body_text()),
        FormRejection::FailedToDeserializeFormBody(e) => ApiError::bad_request("invalid_form", e.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        _ => ApiError::bad_request("invalid_form", "the form could not be read"),
    }
}

fn query_rejection(r: QueryRejection) -> HtmlError {
    HtmlError(ApiError::bad_request("invalid_query", r.body_text()))
}

fn path_rejection(r: PathRejection) -> HtmlError {
    HtmlError(ApiError::bad_request("invalid_path", r.body_text()))
}

/// `Set-Cookie` values for a new session: the session itself, and a new CSRF token
/// (a token planted before login is not carried into the session).
fn login_cookies(state: &AppState, done: &crate::service::LoggedIn) -> Vec<(header::HeaderName, String)> {
    let secure = state.config().sessions.secure_cookies;
    let csrf = CsrfToken { token: crate::auth::random_token(), fresh: true };
    let mut cookies: Vec<_> = crate::auth::login_cookies(state, done).collect();
    cookies.push((header::SET_COOKIE, csrf.set_cookie(secure).unwrap_or_default()));
    cookies
}

/// A `next` target, if it is a path on this site (no scheme, no host, no `//`).
fn local_path(next: Option<&str>) -> Option<&str> {
    let n = next?;
    let ok = n.starts_with('/')
        && !n.starts_with("//")
        && n.len() <= 512
        && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    ok.then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_local_path() {
        assert_eq!(local_path(Some("/p/12")), Some("/p/12"));
        assert_eq!(local_path(Some("/u/a?cursor=x")), Some("/u/a?cursor=x"));
        for bad in ["", "p/1", "//evil.example", "/\\evil.example", "https://evil.example", "/a b", "/\u{e9}"]
        {
            assert_eq!(local_path(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(local_path(None), None);
    }

    #[test]
    fn images_may_come_from_the_media_origin_only() {
        assert_eq!(media_source("/media/"), None);
        assert_eq!(media_source("https://cdn.example/media/"), Some("https://cdn.example".into()));
        assert_eq!(media_source("HTTP://127.0.0.1:8081/m/"), Some("http://127.0.0.1:8081".into()));
        assert_eq!(media_source("//cdn.example/"), Some("cdn.example".into()));
        assert_eq!(media_source("https://a;b/"), Some("https:".into()));
        assert_eq!(media_source("https://x y/"), Some("https:".into()));
        let csp = content_security_policy("/media/", &[]);
        assert!(csp.contains("img-src 'self' data:;"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "our own script only: {csp}");
        let csp = content_security_policy("https://cdn.example/media/", &[]);
        assert!(csp.contains("img-src 'self' data: https://cdn.example;"), "{csp}");
        assert!(HeaderValue::from_str(&content_security_policy("https://cdn.example/\n", &[])).is_ok());
        let edges = ["http://127.0.1.50:8000".to_owned(), "https://127.0.1.50:8443".to_owned()];
        let csp = content_security_policy("/media/", &edges);
        assert!(
            csp.contains("img-src 'self' data: http://127.0.1.50:8000 https://127.0.1.50:8443;"),
            "every edge's origins: {csp}"
        );
    }

    #[test]
    fn form_content_type_is_checked() {
        let mut h = HeaderMap::new();
        assert!(!is_urlencoded_form(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        assert!(is_urlencoded_form(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_urlencoded_form(&h));
    }
}
