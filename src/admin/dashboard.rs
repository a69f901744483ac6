//! `GET /`: the dashboard, one page (`dashboard.html`, built into the binary) that polls `/api/status` and
//! `/api/history` every second and draws each backend: its state in colour, since when and why, the last health
//! checks, requests/s and p50/p99 latency over the last five minutes, requests in flight, and the buttons that
//! POST to `/api/backends/{id}/disable|enable|drain` and `/api/reload`.
//!
//! Self-contained on purpose: no CDN, no font, no second file, so the page works on a machine without internet and
//! cannot change under the operator. Its script and style are inline, and the Content-Security-Policy allows
//! exactly those two blocks by their SHA-256 (no `'unsafe-inline'`), fetches to this origin only, and nothing else:
//! whatever a backend's error text held, it could not run or load anything. The hashes are constants checked by a
//! test; after editing the page, `cargo test` prints the new ones.
//!
//! With `admin_token`, the browser gets the 401's `WWW-Authenticate: Basic`, asks once, and sends the credentials
//! with the page's own requests (same origin).

use http::{header, HeaderValue, StatusCode};

use super::answer::{self, Answer};

const PAGE: &str = include_str!("dashboard.html");
/// `sha256-<base64>` of the text between the page's `<script>` and `</script>`.
const SCRIPT_SHA256: &str = "sha256-xwCb4IQnyfolHp/j8O0y/4Oc/rnsvSm4k9dtnYfw4Fc=";
/// The same for `<style>`.
const STYLE_SHA256: &str = "sha256-b+6kp2vDuZfFrDjWm0XWFMSQ4jUeYon1LWq5rVHdf/0=";

pub fn page() -> Answer {
    let mut answer = answer::with(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    let policy = format!(
        "default-src 'none'; script-src '{SCRIPT_SHA256}'; style-src '{STYLE_SHA256}'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let headers = answer.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    answer
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::{Digest, Sha256};

    use super::*;

    /// The text of the page's one `<tag>` block.
    fn block(tag: &str) -> &'static str {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        assert_eq!(PAGE.matches(&open).count(), 1, "one {open} in the page");
        let start = PAGE.find(&open).unwrap() + open.len();
        let end = start + PAGE[start..].find(&close).unwrap();
        &PAGE[start..end]
    }

    fn sha256(text: &str) -> String {
        let digest = Sha256::digest(text.as_bytes());
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_script_and_style() {
        assert_eq!(
            SCRIPT_SHA256,
            sha256(block("script")),
            "the page's script changed: set SCRIPT_SHA256 to the right-hand value"
        );
        assert_eq!(
            STYLE_SHA256,
            sha256(block("style")),
            "the page's style changed: set STYLE_SHA256 to the right-hand value"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["://", "@import", "url(", "src=", "href=\"h", "href=\"/"] {
            let found = PAGE
                .match_indices(outside)
                .map(|(at, _)| &PAGE[at.saturating_sub(20)..(at + 40).min(PAGE.len())])
                .filter(|context| !context.contains("www.w3.org/2000/svg"));
            let found: Vec<&str> = found.collect();
            assert!(found.is_empty(), "{outside}: {found:?}");
        }
        let answer = page();
        let policy = answer.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.starts_with("default-src 'none'; "), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
    }
}
