//! The visible text of an HTML page: the content of `script`, `style`,
//! `head`, `template`, `noscript` and `svg` elements and comments is
//! dropped, block elements end lines, and character references are decoded.

/// Elements whose content is never shown.
const HIDDEN: [&str; 7] = ["script", "style", "head", "template", "noscript", "svg", "title"];

/// Elements that start and end a line of text.
const BLOCKS: [&str; 30] = [
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "nav",
    "aside",
    "blockquote",
    "pre",
    "hr",
    "dl",
    "dt",
    "dd",
    "form",
    "tbody",
    "thead",
];

/// True when the text starts like an HTML document or fragment.
pub(crate) fn looks_like_html(head: &str) -> bool {
    let start: String = head.chars().take(200).collect::<String>().to_ascii_lowercase();
    start.starts_with("<!doctype html")
        || start.starts_with("<html")
        || start.starts_with("<body")
        || start.starts_with("<head")
        || (start.starts_with('<')
            && (start.contains("<p>") || start.contains("<div") || start.contains("<table")))
}

/// Returns the visible text: one line per block, cells of a table row
/// separated by tabs, paragraphs separated by blank lines.
pub(crate) fn visible_text(html: &str) -> String {
    let mut out = String::new();
    let mut hidden: Option<String> = None;
    let mut rest = html;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        if rest.starts_with('<') {
            let end = tag_end(rest);
            let tag = &rest[1..end.saturating_sub(1).max(1)];
            rest = &rest[end..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if let Some(open) = &hidden {
                if closing && *open == name {
                    hidden = None;
                }
                continue;
            }
            if !closing && HIDDEN.contains(&name.as_str()) && !tag.ends_with('/') {
                hidden = Some(name);
                continue;
            }
            match name.as_str() {
                "td" | "th" if !closing && !out.ends_with('\n') && !out.is_empty() => out.push('\t'),
                "td" | "th" => {}
                "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "ul" | "ol" | "blockquote"
                | "pre" | "section" | "article" => paragraph_break(&mut out),
                "br" | "tr" | "li" | "div" | "hr" | "dt" | "dd" => line_break(&mut out),
                _ if BLOCKS.contains(&name.as_str()) => line_break(&mut out),
                _ => {}
            }
            continue;
        }
        let next = rest.find('<').unwrap_or(rest.len());
        if hidden.is_none() {
            push_text(&mut out, &decode_entities(&rest[..next]));
        }
        rest = &rest[next..];
    }
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let mut text = lines.join("\n");
    while text.contains("\n\n\n") {
        text = text.replace("\n\n\n", "\n\n");
    }
    text.trim().to_string()
}

/// The index just past the `>` that ends the tag at the start of `text`,
/// quotes respected, or the end of the text.
fn tag_end(text: &str) -> usize {
    let mut quote = None;
    for (index, c) in text.char_indices().skip(1) {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return index + 1,
            _ => {}
        }
    }
    text.len()
}

fn line_break(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn paragraph_break(out: &mut String) {
    line_break(out);
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

/// Appends text with runs of white space collapsed to one space.
fn push_text(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !(out.is_empty() || out.ends_with([' ', '\n', '\t'])) {
                out.push(' ');
            }
        } else if c == '\u{a0}' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
}

/// Decodes `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&nbsp;` and
/// numeric references; any other reference stays as written.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(';').filter(|&end| end <= 10);
        let decoded = end.and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|digits| digits.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, length)) => {
                out.push(c);
                rest = &rest[length..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::visible_text;

    #[test]
    fn only_visible_text_remains() {
        let html = r#"<!DOCTYPE html>
<html><head><title>Policy</title><style>p { color: red }</style></head>
<body>
  <h1>Policy   summary</h1>
  <script>var secret = "hidden";</script>
  <p>Premium: <b>$1,234.50</b> &amp; fees&nbsp;included.</p>
  <!-- a comment -->
  <table><tr><th>Driver</th><th>Age</th></tr><tr><td>Ada</td><td>36</td></tr></table>
  <ul><li>One</li><li>Two &#8211; &#x41;</li></ul>
</body></html>"#;
        assert_eq!(
            visible_text(html),
            "Policy summary\n\nPremium: $1,234.50 & fees included.\n\nDriver\tAge\nAda\t36\n\nOne\nTwo – A"
        );
    }
}
