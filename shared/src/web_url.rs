//! URLs an operator configures (the portal, webhooks), parsed with one message for what
//! cannot be parsed.
//!
//! Host names are ASCII only: the URL parser is built without a Unicode back end for
//! international domain names (its tables cost every function about 130 KB), so an
//! international name is given in the ASCII form DNS stores it in (`xn--…`, Punycode).
//! ArcGIS Online org URLs, AWS endpoints and the chat services' webhook URLs are ASCII.

use reqwest::Url;

/// Why a configured URL was refused; shown after the setting's name ("portal_url is not a
/// valid URL").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The text is not a URL; the parser's reason ("relative URL without a base") is kept
    /// for messages that may show it (a webhook URL's check shows none of it).
    #[error("not a valid URL")]
    Invalid(String),
    /// A URL whose host name has non-ASCII letters.
    #[error("not a valid URL: write an international host name in its ASCII form (xn--…)")]
    InternationalHost,
}

/// `text` (trimmed) as a URL, or why not.
pub fn parse(text: &str) -> Result<Url, UrlError> {
    let text = text.trim();
    // Only the host can make a non-ASCII URL fail: elsewhere non-ASCII is percent-encoded.
    Url::parse(text).map_err(|e| match text.is_ascii() {
        true => UrlError::Invalid(e.to_string()),
        false => UrlError::InternationalHost,
    })
}

/// Whether `url` points at this machine (`localhost`, `127.0.0.0/8`, `[::1]`): the one place
/// plain `http://` is accepted, for simulators and local tests, since nothing sent there
/// crosses a network.
pub fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_urls_parse_and_are_trimmed() {
        let url = parse("  https://Org.Maps.ArcGIS.com/sharing/rest \n").unwrap();
        assert_eq!(url.host_str(), Some("org.maps.arcgis.com"));
        assert_eq!(url.path(), "/sharing/rest");
        assert_eq!(
            parse("https://xn--bcher-kva.example/hook").unwrap().host_str(),
            Some("xn--bcher-kva.example")
        );
    }

    #[test]
    fn an_international_host_is_refused_with_its_ascii_form_as_the_fix() {
        let refused = parse("https://bücher.example/hook").unwrap_err();
        assert_eq!(refused, UrlError::InternationalHost);
        assert_eq!(
            refused.to_string(),
            "not a valid URL: write an international host name in its ASCII form (xn--…)"
        );
        // Non-ASCII outside the host is percent-encoded, not refused.
        assert_eq!(parse("https://org.example/équipe").unwrap().path(), "/%C3%A9quipe");
    }

    #[test]
    fn loopback_hosts_are_this_machine_only() {
        for local in [
            "http://localhost:8080",
            "http://127.0.0.1",
            "http://127.9.9.9/x",
            "http://[::1]:9000",
        ] {
            assert!(is_loopback(&parse(local).unwrap()), "{local}");
        }
        for remote in [
            "https://org.maps.arcgis.com",
            "http://10.0.0.1",
            "http://localhost.example.com",
        ] {
            assert!(!is_loopback(&parse(remote).unwrap()), "{remote}");
        }
    }

    #[test]
    fn what_is_not_a_url_says_so() {
        assert_eq!(
            parse("org.maps.arcgis.com").unwrap_err(),
            UrlError::Invalid("relative URL without a base".into())
        );
        assert_eq!(parse("").unwrap_err().to_string(), "not a valid URL");
    }
}
