//! The page frame, the style sheet and the pieces pages share.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::service::{PostPage, PostView};

/// Who is looking at a page, as the top bar needs it.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    /// Their id.
    pub id: i64,
    /// Their name (for the profile link).
    pub username: String,
    /// Their shown name.
    pub display_name: String,
    /// Their session token (to log out).
    pub token: String,
}

/// The whole style sheet, inlined in every page (one request per page, no asset
/// pipeline needed; a few kilobytes).
const CSS: &str = r#"
:root{--bg:#fafafa;--card:#fff;--text:#1c1e21;--muted:#65676b;--line:#e4e6eb;--accent:#e1306c;--accent-2:#c13584;--ok:#1a7f37;--bad:#b42318;--bad-bg:#fef3f2;--radius:14px}
@media (prefers-color-scheme:dark){:root{--bg:#0f1012;--card:#18191c;--text:#e7e9ea;--muted:#9aa0a6;--line:#2c2e33;--bad:#ff8a80;--bad-bg:#2a1615}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--text);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif}
a{color:inherit}
.topbar{position:sticky;top:0;z-index:10;background:var(--card);border-bottom:1px solid var(--line)}
.topbar nav{max-width:640px;margin:0 auto;padding:.6rem 1rem;display:flex;align-items:center;gap:.25rem;flex-wrap:wrap}
.brand{font-weight:800;font-size:1.35rem;letter-spacing:-.02em;text-decoration:none;margin-right:auto;background:linear-gradient(90deg,var(--accent),var(--accent-2));-webkit-background-clip:text;background-clip:text;color:transparent}
.topbar a.nav,.topbar button.nav{font:inherit;font-size:.95rem;text-decoration:none;color:var(--text);background:none;border:0;padding:.35rem .6rem;border-radius:8px;cursor:pointer}
.topbar a.nav:hover,.topbar button.nav:hover{background:var(--line)}
.topbar form{margin:0;display:inline}
main{max-width:640px;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;line-height:1.25;margin:.5rem 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .75rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:var(--radius);padding:1rem 1.1rem;margin:0 0 1rem}
.muted{color:var(--muted)}
.small{font-size:.875rem}
label{display:block;font-weight:600;font-size:.9rem;margin:.75rem 0 .3rem}
label .muted{font-weight:400}
input[type=text],input[type=password],textarea{width:100%;font:inherit;color:var(--text);background:var(--bg);border:1px solid var(--line);border-radius:10px;padding:.6rem .75rem}
input:focus,textarea:focus{outline:2px solid var(--accent);outline-offset:1px;border-color:transparent}
textarea{min-height:6rem;resize:vertical}
.actions{display:flex;align-items:center;gap:.75rem;margin-top:1rem;flex-wrap:wrap}
.btn{display:inline-block;font:inherit;font-weight:600;font-size:.95rem;padding:.5rem 1.1rem;border-radius:999px;border:1px solid transparent;cursor:pointer;text-decoration:none;background:var(--accent);color:#fff}
.btn:hover{background:var(--accent-2)}
.btn.secondary{background:transparent;color:var(--text);border-color:var(--line)}
.btn.secondary:hover{background:var(--line)}
.alert{background:var(--bad-bg);color:var(--bad);border:1px solid var(--bad);border-radius:10px;padding:.6rem .8rem;margin:0 0 1rem}
.post .who{display:flex;align-items:baseline;gap:.4rem;flex-wrap:wrap;text-decoration:none}
.post .who strong{font-weight:700}
.caption{white-space:pre-wrap;overflow-wrap:anywhere;margin:.5rem 0}
.post.single .caption{font-size:1.15rem}
.meta{display:flex;align-items:center;gap:.5rem;flex-wrap:wrap;color:var(--muted);font-size:.875rem}
.meta a{color:var(--muted);text-decoration:none}
.meta a:hover{text-decoration:underline}
.meta form{margin:0 0 0 auto}
.profile-head{display:flex;gap:1rem;align-items:center}
.avatar{flex:none;width:64px;height:64px;border-radius:50%;display:grid;place-items:center;font-weight:800;font-size:1.6rem;color:#fff;background:linear-gradient(135deg,var(--accent),var(--accent-2))}
.profile-head h1{margin:0}
.counts{display:flex;gap:1.25rem;margin:.75rem 0 0;padding:0;list-style:none}
.counts strong{display:block;font-size:1.1rem}
.pager{text-align:center;margin:1rem 0 2rem}
.hero{text-align:center;padding:2.5rem 1rem}
.hero h1{font-size:2.2rem;margin-bottom:.5rem}
.hero .actions{justify-content:center}
.error-page h1{font-size:2rem}
footer.site{max-width:640px;margin:0 auto;padding:1rem 1rem 2rem;color:var(--muted);font-size:.8rem;text-align:center}
"#;

/// A full page: head, top bar and `body`. `csrf` is the token for the log-out form
/// (absent on pages that show no forms, like error pages).
pub(crate) fn page(me: Option<&Me>, csrf: Option<&str>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Millions" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header.topbar {
                    nav aria-label="Main" {
                        a.brand href="/" { "Millions" }
                        @if let Some(me) = me {
                            a.nav href="/" { "Home" }
                            a.nav href="/upload" { "New post" }
                            a.nav href={ "/u/" (me.username) } title=(me.display_name) { "@" (me.username) }
                            @if let Some(csrf) = csrf {
                                form method="post" action="/logout" {
                                    (csrf_field(csrf))
                                    button.nav type="submit" { "Log out" }
                                }
                            }
                        } @else {
                            a.nav href="/login" { "Log in" }
                            a.nav href="/signup" { "Sign up" }
                        }
                    }
                }
                main { (body) }
                footer.site { "Millions · a photo-sharing network, from zero to millions of users" }
            }
        }
    }
}

/// The hidden CSRF input every state-changing form carries.
pub(crate) fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// An error message box, if there is a message.
pub(crate) fn alert(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message {
            p.alert role="alert" { (m) }
        }
    }
}

/// "2024-05-01T12:34:56.789Z" → "2024-05-01 12:34 UTC"; anything else as it is.
pub(crate) fn readable_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(10..11), rfc3339.get(11..16)) {
        (Some(date), Some("T"), Some(time)) if rfc3339.ends_with('Z') => format!("{date} {time} UTC"),
        _ => rfc3339.to_owned(),
    }
}

/// "1 like", "2 likes".
pub(crate) fn likes_label(n: i64) -> String {
    if n == 1 { "1 like".to_owned() } else { format!("{n} likes") }
}

/// One post; `extra` goes at the end of its meta line (the like button on a post page).
pub(crate) fn post_card(p: &PostView, single: bool, extra: Markup) -> Markup {
    html! {
        article.card.post.single[single] {
            a.who href={ "/u/" (p.author.username) } {
                strong { (p.author.display_name) }
                span.muted { "@" (p.author.username) }
            }
            p.caption { (p.caption) }
            div.meta {
                a href={ "/p/" (p.id) } {
                    time datetime=(p.created_at) { (readable_time(&p.created_at)) }
                }
                span aria-hidden="true" { "·" }
                span.likes { (likes_label(p.like_count)) }
                (extra)
            }
        }
    }
}

/// A list of posts with an "Older posts" link to `base?cursor=…` when there are more.
pub(crate) fn post_list(page: &PostPage, base: &str, empty: Markup) -> Markup {
    html! {
        @if page.posts.is_empty() {
            div.card.muted { (empty) }
        }
        @for p in &page.posts {
            (post_card(p, false, html! {}))
        }
        @if let Some(cursor) = &page.next_cursor {
            p.pager {
                a.btn.secondary href={ (base) "?cursor=" (cursor) } rel="next" { "Older posts" }
            }
        }
    }
}

/// The caption form, posting to `/upload`.
pub(crate) fn new_post_form(csrf: &str, caption: &str, error: Option<&str>, autofocus: bool) -> Markup {
    html! {
        form.card method="post" action="/upload" {
            (alert(error))
            (csrf_field(csrf))
            label for="caption" { "What's new?" }
            textarea #caption name="caption" required maxlength=(crate::service::MAX_CAPTION)
                placeholder="Write a caption…" autofocus[autofocus] { (caption) }
            div.actions { button.btn type="submit" { "Post" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_trimmed_to_minutes() {
        assert_eq!(readable_time("2024-05-01T12:34:56.789Z"), "2024-05-01 12:34 UTC");
        assert_eq!(readable_time("2024-05-01T12:34:56Z"), "2024-05-01 12:34 UTC");
        assert_eq!(readable_time("whenever"), "whenever");
        assert_eq!(readable_time(""), "");
    }

    #[test]
    fn likes_are_counted_in_words() {
        assert_eq!(likes_label(0), "0 likes");
        assert_eq!(likes_label(1), "1 like");
        assert_eq!(likes_label(2), "2 likes");
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        let me = Me { id: 1, username: "a_b".into(), display_name: "<b>x</b>".into(), token: String::new() };
        let html = page(Some(&me), Some("tok\"en"), "<t>", html! { p { "<script>" } }).into_string();
        assert!(html.contains("&lt;t&gt; · Millions"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<b>x</b>"));
        assert!(html.contains("value=\"tok&quot;en\""));
        assert!(html.contains("name=\"viewport\""));
    }
}
