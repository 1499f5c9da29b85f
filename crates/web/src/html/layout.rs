//! The page frame, the style sheet and the pieces pages share.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::service::{ImageView, PhotoView, PostPage, PostView};

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
    /// Their unread notifications for the top bar's badge (cached; `None` if it
    /// could not be read).
    pub unread: Option<i64>,
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
.topbar .topsearch input{width:9rem;padding:.3rem .5rem;margin:0 .25rem}
.notifications{list-style:none;padding:.25rem 1.1rem}.notification{padding:.6rem 0;border-top:1px solid var(--line)}.notification:first-child{border-top:0}.notification.unread{font-weight:600}
.bio{white-space:pre-wrap;overflow-wrap:anywhere;margin:.5rem 0 0}.counts a{text-decoration:none}
.badge{display:inline-block;min-width:1.3em;padding:0 .35em;border-radius:999px;background:var(--accent);color:#fff;font-size:.75rem;font-weight:700;text-align:center}
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
.comment-form{display:flex;gap:.5rem;margin:.75rem 0 0}.comment-form input[type=text]{flex:1;min-width:0}
.comment-list{list-style:none;margin:.5rem 0 0;padding:0}.comment{padding:.5rem 0;border-top:1px solid var(--line)}
.comment .body{white-space:pre-wrap;overflow-wrap:anywhere}.comment .meta form{margin:0 0 0 .5rem}
button.link{background:none;border:0;padding:0;color:var(--muted);font:inherit;cursor:pointer;text-decoration:underline}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.profile-head{display:flex;gap:1rem;align-items:center}
.avatar{flex:none;width:64px;height:64px;border-radius:50%;display:grid;place-items:center;font-weight:800;font-size:1.6rem;color:#fff;background:linear-gradient(135deg,var(--accent),var(--accent-2))}
.profile-head h1{margin:0}
img.avatar{object-fit:cover;padding:0;background:var(--line)}
.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:4px;margin-bottom:1rem}.grid a{display:block;aspect-ratio:1}
.grid img{width:100%;height:100%;object-fit:cover;display:block;border-radius:4px}
.counts{display:flex;gap:1.25rem;margin:.75rem 0 0;padding:0;list-style:none}
.counts strong{display:block;font-size:1.1rem}
.pager{text-align:center;margin:1rem 0 2rem}
.hero{text-align:center;padding:2.5rem 1rem}
.hero h1{font-size:2.2rem;margin-bottom:.5rem}
.hero .actions{justify-content:center}
.error-page h1{font-size:2rem}
.photo{margin:.75rem -1.1rem;background:var(--line)}
.photo a{display:block}
.photo img{display:block;width:100%;height:auto;max-height:85vh;object-fit:contain}
.photo img.tall{aspect-ratio:4/5;object-fit:cover;max-height:none}
.notice{border:1px dashed var(--line);border-radius:10px;padding:1.25rem .9rem;margin:.75rem 0;text-align:center;color:var(--muted)}
.notice.failed{border-style:solid;border-color:var(--bad);background:var(--bad-bg);color:var(--bad)}
input[type=file]{display:block;width:100%;font:inherit;font-size:.9rem;color:var(--muted)}
footer.site{max-width:640px;margin:0 auto;padding:1rem 1rem 2rem;color:var(--muted);font-size:.8rem;text-align:center}
"#;

/// A full page: head, top bar and `body`. `csrf` is the token for the log-out form
/// (absent on pages that show no forms, like error pages).
pub(crate) fn page(me: Option<&Me>, csrf: Option<&str>, title: &str, body: Markup) -> Markup {
    page_with_head(me, csrf, title, html! {}, body)
}

/// [`page`] with extra elements (`head`) at the end of its `<head>`.
pub(crate) fn page_with_head(
    me: Option<&Me>,
    csrf: Option<&str>,
    title: &str,
    head: Markup,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Millions" }
                style { (PreEscaped(CSS)) }
                script src=(super::SCRIPT_PATH) defer {}
                (head)
            }
            body {
                header.topbar {
                    nav aria-label="Main" {
                        a.brand href="/" { "Millions" }
                        form.topsearch method="get" action="/search" role="search" {
                            input type="search" name="q" placeholder="Find people" aria-label="Find people"
                                minlength="2" maxlength="50" required;
                        }
                        @if let Some(me) = me {
                            a.nav href="/" { "Home" }
                            a.nav href="/upload" { "New post" }
                            (notifications_link(me.unread))
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

/// The top bar's link to the notifications, with the unread count ("99+" at
/// the cap) when there are any.
fn notifications_link(unread: Option<i64>) -> Markup {
    let badge = match unread {
        Some(n) if n >= data::UNREAD_CAP => Some(format!("{}+", data::UNREAD_CAP - 1)),
        Some(n) if n > 0 => Some(n.to_string()),
        _ => None,
    };
    html! {
        a.nav href="/notifications" {
            "Notifications"
            @if let Some(badge) = badge {
                " " span.badge aria-label={ (badge) " unread" } { (badge) }
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

/// A time as pages show it: how long ago ("now", "5 m", "3 h", "2 d"), then the
/// day ("Mar 5", with the year when it is not `now`'s), its exact time on hover.
pub(crate) fn time_ago(rfc3339: &str) -> Markup {
    let now = time::OffsetDateTime::now_utc();
    html! { time datetime=(rfc3339) title=(readable_time(rfc3339)) { (relative_time(rfc3339, now)) } }
}

/// "now", "5 m", "3 h", "2 d", then "Mar 5" (or "Mar 5, 2023" in another year):
/// `rfc3339` seen at `now`; anything unreadable as [`readable_time`] has it.
pub(crate) fn relative_time(rfc3339: &str, now: time::OffsetDateTime) -> String {
    let Ok(at) = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) else {
        return readable_time(rfc3339);
    };
    let secs = (now - at).whole_seconds().max(0);
    match secs {
        0..60 => "now".to_owned(),
        60..3_600 => format!("{} m", secs / 60),
        3_600..86_400 => format!("{} h", secs / 3_600),
        86_400..604_800 => format!("{} d", secs / 86_400),
        _ => {
            let month = &format!("{}", at.month())[..3];
            if at.year() == now.year() {
                format!("{month} {}", at.day())
            } else {
                format!("{month} {}, {}", at.day(), at.year())
            }
        }
    }
}

/// "1 like", "2 likes".
pub(crate) fn likes_label(n: i64) -> String {
    if n == 1 { "1 like".to_owned() } else { format!("{n} likes") }
}

/// How long a photo post's page waits before reloading itself while the photo is
/// processed (no JavaScript needed).
pub(crate) const PROCESSING_REFRESH_SECS: u32 = 3;

/// `sizes` of a post's photo: it spans the card, which spans the page's column
/// (640 px wide with 1 rem padding each side, less the card's 1 px borders).
const PHOTO_SIZES: &str = "(max-width: 640px) calc(100vw - 2rem), 606px";

/// The thumbnail pages show by default: the 640 px one (the first at least 640 px
/// on its long side), else the largest there is, else the original.
pub(crate) fn shown_image(photo: &PhotoView) -> &ImageView {
    photo
        .thumbnails
        .iter()
        .find(|t| t.width.max(t.height) >= 640)
        .or(photo.thumbnails.last())
        .unwrap_or(&photo.original)
}

/// The `srcset` of a photo: every thumbnail with its width (`url 640w, …`); `None`
/// when there are none (the original alone is shown).
pub(crate) fn srcset(photo: &PhotoView) -> Option<String> {
    let entries: Vec<String> = photo.thumbnails.iter().map(|t| format!("{} {}w", t.url, t.width)).collect();
    (!entries.is_empty()).then(|| entries.join(", "))
}

/// Whether the post is still being processed (its photo has no thumbnails yet).
pub(crate) fn is_processing(p: &PostView) -> bool {
    p.status == "processing"
}

/// A post's photo, or what stands in for it while it is processed or if that
/// failed. On a post's own page (`single`) the image loads at once; in lists it
/// loads lazily and links to the post.
fn photo_block(p: &PostView, photo: Option<&PhotoView>, single: bool, own: bool) -> Markup {
    match (p.status.as_str(), photo) {
        ("processing", _) => html! {
            p.notice role="status" {
                @if own { "Processing your photo…" } @else { "Processing this photo…" }
                @if single {
                    br;
                    span.small { "This page refreshes by itself when it is ready." }
                }
            }
        },
        ("failed", _) => html! {
            p.notice.failed role="note" { "This photo could not be processed." }
        },
        (_, Some(photo)) => {
            let shown = shown_image(photo);
            let srcset = srcset(photo);
            let sizes = srcset.as_ref().map(|_| PHOTO_SIZES);
            let alt = match p.caption.trim() {
                "" => format!("Photo by @{}", p.author.username),
                caption => caption.to_owned(),
            };
            let lazy = (!single).then_some("lazy");
            // In lists a photo taller than 4:5 is cropped to 4:5 (its page shows it whole).
            let tall = !single && u64::from(shown.height) * 4 > u64::from(shown.width) * 5;
            let img = html! {
                img class=[tall.then_some("tall")] src=(shown.url) srcset=[srcset] sizes=[sizes] width=(shown.width) height=(shown.height)
                    alt=(alt) loading=[lazy] decoding="async";
            };
            html! {
                figure.photo {
                    @if single { (img) } @else { a href={ "/p/" (p.id) } tabindex="-1" { (img) } }
                }
            }
        }
        _ => html! {},
    }
}

/// One post with its `photo` (its URLs chosen for this request: a post in a
/// list keeps none); `extra` goes at the end of its meta line (the like button
/// on a post page). `viewer` is who is looking (to word the processing notice).
pub(crate) fn post_card(
    p: &PostView,
    photo: Option<&PhotoView>,
    single: bool,
    viewer: Option<&Me>,
    extra: Markup,
) -> Markup {
    post_card_with(p, photo, single, viewer, extra, html! {})
}

/// [`post_card`] with `footer` below its meta line (a feed card's comment form).
pub(crate) fn post_card_with(
    p: &PostView,
    photo: Option<&PhotoView>,
    single: bool,
    viewer: Option<&Me>,
    extra: Markup,
    footer: Markup,
) -> Markup {
    let own = viewer.is_some_and(|me| me.id.to_string() == p.author.id);
    let original = photo.filter(|_| single && p.status == "ready").map(|ph| &ph.original);
    html! {
        article.card.post.single[single] id={ "p" (p.id) } data-post=(p.id) {
            a.who href={ "/u/" (p.author.username) } {
                strong { (p.author.display_name) }
                span.muted { "@" (p.author.username) }
            }
            (photo_block(p, photo, single, own))
            @if !p.caption.is_empty() {
                p.caption { (p.caption) }
            }
            div.meta {
                a href={ "/p/" (p.id) } {
                    (time_ago(&p.created_at))
                }
                span aria-hidden="true" { "·" }
                span.likes { (likes_label(p.like_count)) }
                span aria-hidden="true" { "·" }
                a.comment-count href={ "/p/" (p.id) "#comments" } { (super::comments::comments_label(p.comment_count)) }
                @if let Some(original) = original {
                    span aria-hidden="true" { "·" }
                    a.original href=(original.url) { "Original (" (original.width) "×" (original.height) ")" }
                }
                (extra)
            }
            (footer)
        }
    }
}

/// A list of posts with an "Older posts" link to `base?cursor=…` when there are
/// more; photo URLs as `page.media` chooses them.
pub(crate) fn post_list(page: &PostPage, base: &str, viewer: Option<&Me>, empty: Markup) -> Markup {
    post_list_with(page, base, viewer, empty, &|_| html! {}, &|_| html! {})
}

/// [`post_list`] with `extra(post)` at the end of each card's meta line and
/// `footer(post)` below it (the feed's like button and comment form).
pub(crate) fn post_list_with(
    page: &PostPage,
    base: &str,
    viewer: Option<&Me>,
    empty: Markup,
    extra: &dyn Fn(&PostView) -> Markup,
    footer: &dyn Fn(&PostView) -> Markup,
) -> Markup {
    html! {
        @if page.posts.is_empty() {
            div.card.muted { (empty) }
        }
        @for p in &page.posts {
            (post_card_with(p, p.photo(&page.media).as_ref(), false, viewer, extra(p), footer(p)))
        }
        @if let Some(cursor) = &page.next_cursor {
            p.pager {
                a.btn.secondary href={ (base) "?cursor=" (cursor) } rel="next" { "Older posts" }
            }
        }
    }
}

/// "10 MB", "512 KB", "900 bytes".
pub(crate) fn size_label(bytes: usize) -> String {
    const KB: usize = 1024;
    const MB: usize = 1024 * KB;
    if bytes >= MB {
        let megabytes = format!("{:.1}", bytes as f64 / MB as f64);
        format!("{} MB", megabytes.strip_suffix(".0").unwrap_or(&megabytes))
    } else if bytes >= KB {
        format!("{} KB", bytes / KB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The new-post form, posting to `/upload`: a caption and an optional photo of at
/// most `max_photo` bytes. The CSRF field comes first: browsers send fields in
/// document order, and the server reads the token before it reads the photo.
pub(crate) fn new_post_form(
    csrf: &str,
    caption: &str,
    error: Option<&str>,
    autofocus: bool,
    max_photo: usize,
) -> Markup {
    html! {
        form.card method="post" action="/upload" enctype="multipart/form-data" {
            (alert(error))
            (csrf_field(csrf))
            label for="caption" { "What's new?" }
            textarea #caption name="caption" maxlength=(crate::service::MAX_CAPTION)
                placeholder="Write a caption…" autofocus[autofocus] { (caption) }
            label for="photo" {
                "Photo " span.muted { "(optional; JPEG, PNG or WebP, up to " (size_label(max_photo)) ")" }
            }
            input #photo type="file" name="photo" accept="image/jpeg,image/png,image/webp";
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
        let now = time::macros::datetime!(2026-12-06 12:00:00 UTC);
        for (at, shown) in [
            ("2026-12-06T11:59:30Z", "now"),
            ("2026-12-06T12:00:30Z", "now"),
            ("2026-12-06T11:55:00Z", "5 m"),
            ("2026-12-06T09:00:00Z", "3 h"),
            ("2026-12-04T12:00:00Z", "2 d"),
            ("2026-03-05T12:00:00Z", "Mar 5"),
            ("2023-03-05T12:00:00Z", "Mar 5, 2023"),
            ("whenever", "whenever"),
        ] {
            assert_eq!(relative_time(at, now), shown, "{at}");
        }
        assert_eq!(readable_time(""), "");
    }

    #[test]
    fn likes_are_counted_in_words() {
        assert_eq!(likes_label(0), "0 likes");
        assert_eq!(likes_label(1), "1 like");
        assert_eq!(likes_label(2), "2 likes");
    }

    fn image(side: u32) -> ImageView {
        ImageView { url: format!("/media/{side}.jpg"), width: side, height: side * 3 / 4 }
    }

    fn photo_post(status: &str, thumbnails: Vec<ImageView>, caption: &str) -> PostView {
        PostView {
            id: "42".into(),
            author: crate::service::AuthorView {
                id: "7".into(),
                username: "ann".into(),
                display_name: "Ann".into(),
            },
            caption: caption.into(),
            like_count: 0,
            comment_count: 0,
            created_at: "2024-05-01T12:34:56Z".into(),
            status: status.into(),
            photo: Some(PhotoView { original: image(3000), thumbnails }),
            liked_by_me: None,
        }
    }

    fn ann() -> Me {
        Me { id: 7, username: "ann".into(), display_name: "Ann".into(), token: String::new(), unread: None }
    }

    #[test]
    fn a_tall_photo_is_cropped_to_four_by_five_in_lists_only() {
        let tall = ImageView { url: "/media/t.jpg".into(), width: 600, height: 1200 };
        let mut p = photo_post("ready", vec![tall], "");
        let listed = post_card(&p, p.photo.as_ref(), false, None, html! {}).into_string();
        assert!(listed.contains(r#"<img class="tall" src="/media/t.jpg""#), "{listed}");
        let single = post_card(&p, p.photo.as_ref(), true, None, html! {}).into_string();
        assert!(!single.contains("tall"), "whole on its page: {single}");
        // 4:5 exactly is not cropped.
        p.photo = Some(PhotoView {
            original: image(3000),
            thumbnails: vec![ImageView { url: "/media/f.jpg".into(), width: 800, height: 1000 }],
        });
        let listed = post_card(&p, p.photo.as_ref(), false, None, html! {}).into_string();
        assert!(!listed.contains("tall"), "{listed}");
    }

    #[test]
    fn a_ready_photo_is_shown_with_its_thumbnails() {
        let p = photo_post("ready", vec![image(160), image(640), image(1280)], "a <cat>");
        let single = post_card(&p, p.photo.as_ref(), true, None, html! {}).into_string();
        assert!(
            single.contains(
                r#"<img src="/media/640.jpg" srcset="/media/160.jpg 160w, /media/640.jpg 640w, /media/1280.jpg 1280w" sizes="(max-width: 640px) calc(100vw - 2rem), 606px" width="640" height="480" alt="a &lt;cat&gt;" decoding="async">"#
            ),
            "{single}"
        );
        assert!(!single.contains("loading="), "the post's own page loads its photo at once");
        assert!(single.contains(r#"href="/media/3000.jpg""#), "links to the original: {single}");
        let listed = post_card(&p, p.photo.as_ref(), false, None, html! {}).into_string();
        assert!(listed.contains(r#"loading="lazy""#) && listed.contains(r#"<a href="/p/42""#), "{listed}");
        assert!(!listed.contains(r#"href="/media/3000.jpg""#));
    }

    #[test]
    fn the_shown_image_is_the_640_one_or_the_largest() {
        let p = photo_post("ready", vec![image(160), image(500)], "");
        let html = post_card(&p, p.photo.as_ref(), false, None, html! {}).into_string();
        assert!(html.contains(r#"src="/media/500.jpg""#) && html.contains(r#"width="500""#), "{html}");
        assert!(html.contains(r#"alt="Photo by @ann""#), "{html}");
        assert!(!html.contains("class=\"caption\""), "no empty caption: {html}");
        let p = photo_post("ready", vec![], "");
        let html = post_card(&p, p.photo.as_ref(), false, None, html! {}).into_string();
        assert!(html.contains(r#"src="/media/3000.jpg""#) && !html.contains("srcset"), "{html}");
    }

    #[test]
    fn processing_and_failed_photos_say_so() {
        let p = photo_post("processing", vec![], "soon");
        let own = post_card(&p, p.photo.as_ref(), true, Some(&ann()), html! {}).into_string();
        assert!(own.contains("Processing your photo…") && !own.contains("<img"), "{own}");
        let other = post_card(&p, p.photo.as_ref(), false, None, html! {}).into_string();
        assert!(other.contains("Processing this photo…"), "{other}");
        let p = photo_post("failed", vec![], "oops");
        let html = post_card(&p, p.photo.as_ref(), true, Some(&ann()), html! {}).into_string();
        assert!(html.contains("This photo could not be processed.") && !html.contains("<img"), "{html}");
    }

    #[test]
    fn sizes_are_in_words() {
        assert_eq!(size_label(10 * 1024 * 1024), "10 MB");
        assert_eq!(size_label(1536 * 1024), "1.5 MB");
        assert_eq!(size_label(64 * 1024), "64 KB");
        assert_eq!(size_label(900), "900 bytes");
    }

    #[test]
    fn the_page_escapes_what_it_shows() {
        let me = Me {
            id: 1,
            username: "a_b".into(),
            display_name: "<b>x</b>".into(),
            token: String::new(),
            unread: Some(3),
        };
        let html = page(Some(&me), Some("tok\"en"), "<t>", html! { p { "<script>" } }).into_string();
        assert!(html.contains("&lt;t&gt; · Millions"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<b>x</b>"));
        assert!(html.contains("value=\"tok&quot;en\""));
        assert!(html.contains("name=\"viewport\""));
    }

    #[test]
    fn the_top_bar_shows_the_unread_count() {
        let bar = |unread| notifications_link(unread).into_string();
        assert!(
            bar(Some(3)).contains(r#"<span class="badge" aria-label="3 unread">3</span>"#),
            "{}",
            bar(Some(3))
        );
        assert!(bar(Some(data::UNREAD_CAP)).contains(">99+<"), "{}", bar(Some(data::UNREAD_CAP)));
        for none in [Some(0), None] {
            assert!(!bar(none).contains("badge") && bar(none).contains("/notifications"), "{}", bar(none));
        }
    }
}
