//! Renders the user docs (`docs/**/*.md`) into `OUT_DIR/docs` and writes `docs_pages.rs`, the table
//! `src/api/docs_site.rs` serves from. Rendering at build time keeps a Markdown parser out of the
//! manager and means a page that renders in CI renders in production. Heading ids follow GitHub's
//! rule, so the `#anchor` links the pages already use on GitHub keep working here.

use flate2::{write::GzEncoder, Compression};
use pulldown_cmark::{html, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;

/// Served as a file: the console's CSP allows same-origin stylesheets but no inline styles.
const CSS: &str = r#":root { color-scheme: light dark; --fg: #1f2328; --bg: #fff; --soft: #f6f8fa; --line: #d1d9e0; --link: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --soft: #151b23; --line: #3d444d; --link: #4493f8; } }
body { margin: 0; font: 16px/1.6 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
nav.top { display: flex; gap: 20px; align-items: center; padding: 10px 24px; border-bottom: 1px solid var(--line); background: var(--soft); }
nav.top .brand { font-weight: 700; margin-right: auto; }
main { max-width: 980px; margin: 0 auto; padding: 8px 24px 64px; }
a { color: var(--link); text-decoration: none; }
a:hover { text-decoration: underline; }
h1, h2 { border-bottom: 1px solid var(--line); padding-bottom: .3em; }
h1, h2, h3, h4 { line-height: 1.25; margin: 1.4em 0 .6em; }
code, pre { font: 85%/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft); border-radius: 6px; }
code { padding: .15em .35em; }
pre { padding: 14px; overflow-x: auto; }
pre code { padding: 0; font-size: 100%; }
table { border-collapse: collapse; display: block; overflow-x: auto; margin: 1em 0; }
th, td { border: 1px solid var(--line); padding: 6px 12px; vertical-align: top; text-align: left; }
th { background: var(--soft); }
.center { text-align: center; }
.right { text-align: right; }
blockquote { margin: 0; padding: 0 1em; border-left: 4px solid var(--line); }
"#;

pub fn embed(docs: &Path, out_dir: &Path) {
    let dest = out_dir.join("docs");
    let _ = std::fs::remove_dir_all(&dest);
    let mut pages = Vec::new();
    list(docs, "", &mut pages);
    if pages.is_empty() {
        println!(
            "cargo:warning=no Markdown under {}; /docs/ will be empty",
            docs.display()
        );
    }
    let known: BTreeSet<String> = pages.iter().cloned().collect();
    let mut files = vec![("docs.css".to_string(), CSS.to_string())];
    for rel in &pages {
        let md = std::fs::read_to_string(docs.join(rel)).expect("read docs page");
        let name = rel.strip_suffix(".md").unwrap_or(rel);
        files.push((format!("{name}.html"), render(&md, rel, &known)));
    }
    let mut table = String::from("&[\n");
    for (rel, text) in &files {
        let path = dest.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create docs dir");
        std::fs::write(&path, text).expect("write docs page");
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(text.as_bytes()).expect("gzip");
        std::fs::write(dest.join(format!("{rel}.gz")), gz.finish().expect("gzip"))
            .expect("write docs page");
        let inc = |p: &str| format!("include_bytes!(concat!(env!(\"OUT_DIR\"), \"/docs/{p}\"))");
        let ct = if rel.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/html; charset=utf-8"
        };
        table.push_str(&format!(
            "    Asset {{ path: {rel:?}, content_type: {ct:?}, body: {}, gzip: Some({}) }},\n",
            inc(rel),
            inc(&format!("{rel}.gz"))
        ));
    }
    table.push(']');
    std::fs::write(out_dir.join("docs_pages.rs"), table).expect("write docs_pages.rs");
}

/// Every `.md` under `dir` as a `/`-separated path relative to the docs root, sorted.
fn list(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            list(&e.path(), &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".md") {
            out.push(format!("{prefix}{name}"));
        }
    }
}

fn render(md: &str, from: &str, known: &BTreeSet<String>) -> String {
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut events: Vec<Event> = Parser::new_ext(md, opts).collect();
    let mut ids = HashSet::new();
    let mut title = None;
    for i in 0..events.len() {
        if let Event::Start(Tag::Heading { level, .. }) = &events[i] {
            let text = heading_text(&events[i + 1..]);
            if *level == HeadingLevel::H1 && title.is_none() {
                title = Some(text.clone());
            }
            let id = unique(slug(&text), &mut ids);
            if let Event::Start(Tag::Heading { id: slot, .. }) = &mut events[i] {
                *slot = Some(id.into());
            }
        }
    }
    let mut kept = Vec::new();
    let events = events.into_iter().filter_map(|e| match e {
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let url = rewrite(&dest_url, from, known);
            kept.push(url.is_some());
            url.map(|u| {
                Event::Start(Tag::Link {
                    link_type,
                    dest_url: u.into(),
                    title,
                    id,
                })
            })
        }
        Event::End(TagEnd::Link) => kept.pop().unwrap_or(true).then_some(e),
        // The pages are written for GitHub, which strips raw HTML; stray `<id>`-style placeholders
        // read better shown than parsed into elements.
        Event::Html(s) | Event::InlineHtml(s) => Some(Event::Text(s)),
        e => Some(e),
    });
    let mut body = String::new();
    html::push_html(&mut body, events);
    // Column alignment arrives as `style` attributes, which the CSP would block.
    for tag in ["th", "td"] {
        for align in ["left", "center", "right"] {
            body = body.replace(
                &format!("<{tag} style=\"text-align: {align}\">"),
                &format!("<{tag} class=\"{align}\">"),
            );
        }
    }
    let mut title_html = String::new();
    let title = title.unwrap_or_else(|| from.to_string());
    html::push_html(&mut title_html, std::iter::once(Event::Text(title.into())));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{title_html} · run-dat-sheesh docs</title><link rel=\"stylesheet\" href=\"/docs/docs.css\"></head>\n\
<body><nav class=\"top\"><a class=\"brand\" href=\"/docs/\">run-dat-sheesh docs</a>\
<a href=\"/\">Console</a><a href=\"/swagger\">API (Swagger)</a></nav>\n<main>\n{body}</main></body></html>\n"
    )
}

fn heading_text(events: &[Event]) -> String {
    let mut s = String::new();
    for e in events {
        match e {
            Event::End(TagEnd::Heading(_)) => break,
            Event::Text(t) | Event::Code(t) => s.push_str(t),
            _ => {}
        }
    }
    s
}

/// GitHub's heading id (github-slugger): lower case, spaces to `-`, other punctuation dropped.
fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Repeated headings get `-1`, `-2`, … like on GitHub.
fn unique(base: String, seen: &mut HashSet<String>) -> String {
    let mut id = base.clone();
    let mut n = 0;
    while !seen.insert(id.clone()) {
        n += 1;
        id = format!("{base}-{n}");
    }
    id
}

/// Where a link on page `from` points on the site. Web links and in-page anchors stay; another page
/// becomes its `.html` (the index `/docs/`); anything else in the repository (sources, the README)
/// is not served, so `None` drops the link and keeps its text.
fn rewrite(dest: &str, from: &str, known: &BTreeSet<String>) -> Option<String> {
    if dest.starts_with('#') || dest.starts_with('/') || dest.contains(':') {
        return Some(dest.to_string());
    }
    let (path, frag) = match dest.split_once('#') {
        Some((p, f)) => (p, format!("#{f}")),
        None => (dest, String::new()),
    };
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    let mut left_docs = false;
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => left_docs |= parts.pop().is_none(),
            s => parts.push(s),
        }
    }
    let target = parts.join("/");
    if left_docs {
        return None;
    }
    if !known.contains(&target) {
        println!("cargo:warning=docs/{from}: link to {dest} leads to no page; rendered as text");
        return None;
    }
    let page = target.strip_suffix(".md").unwrap_or(&target);
    Some(match page {
        "index" => format!("/docs/{frag}"),
        p => format!("/docs/{p}.html{frag}"),
    })
}
