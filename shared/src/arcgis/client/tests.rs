use super::*;

#[test]
fn rest_base_normalises_org_urls() {
    for (input, want) in [
        (
            "https://myorg.maps.arcgis.com",
            "https://myorg.maps.arcgis.com/sharing/rest/",
        ),
        (
            "https://myorg.maps.arcgis.com/",
            "https://myorg.maps.arcgis.com/sharing/rest/",
        ),
        (
            "https://www.arcgis.com/sharing/rest",
            "https://www.arcgis.com/sharing/rest/",
        ),
        (
            "https://www.arcgis.com/sharing/rest/?f=json",
            "https://www.arcgis.com/sharing/rest/",
        ),
        ("https://host/portal/sharing", "https://host/portal/sharing/rest/"),
        (
            "http://127.0.0.1:8080/sharing/rest",
            "http://127.0.0.1:8080/sharing/rest/",
        ),
        ("http://localhost:1", "http://localhost:1/sharing/rest/"),
    ] {
        assert_eq!(rest_base(input).unwrap().as_str(), want, "{input}");
    }
}

#[test]
fn rest_base_refuses_clear_text_and_junk() {
    for bad in [
        "http://myorg.maps.arcgis.com",
        "ftp://x",
        "not a url",
        "https://u:p@host/",
    ] {
        assert!(matches!(rest_base(bad), Err(Error::InvalidUrl { .. })), "{bad}");
    }
}

#[test]
fn url_segments_are_encoded() {
    let client = Client::new(ClientConfig::new(
        "https://org.example.com",
        Credentials::ApiKey(crate::arcgis::Secret::new("k")),
    ))
    .unwrap();
    let url = client.url(&["community", "users", "a b/../c?d"]);
    assert_eq!(
        url.as_str(),
        "https://org.example.com/sharing/rest/community/users/a%20b%2F..%2Fc%3Fd"
    );
}

#[test]
fn invalid_portal_urls_are_named_by_scheme_and_host_only() {
    for bad in [
        "https://user:pa55word@org.example.com/sharing/rest?token=SECRET123",
        "http://org.example.com/pa55word/sharing/rest?token=SECRET123",
        "ftp://org.example.com/pa55word?token=SECRET123",
        "pa55word SECRET123",
    ] {
        let err = rest_base(bad).expect_err(bad);
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("pa55word") && !text.contains("SECRET123") && text.contains("portal_url"),
            "{text}"
        );
    }
    let err = rest_base("https://user:pa55word@org.example.com/x").unwrap_err();
    assert!(err.to_string().contains("(https://org.example.com)"), "{err}");
    // What is wrong with it is said, as the URL parser says it.
    let err = rest_base("org.maps.arcgis.com").unwrap_err();
    assert!(err.to_string().contains("relative URL without a base"), "{err}");
    let err = rest_base("https://sigé.maps.arcgis.com").unwrap_err();
    assert!(err.to_string().contains("its ASCII form (xn--…)"), "{err}");
}

#[test]
fn until_shares_state_and_never_extends_a_deadline() {
    let client = Client::new(ClientConfig::new(
        "https://org.example.com",
        Credentials::ApiKey(crate::arcgis::Secret::new("k")),
    ))
    .unwrap();
    assert_eq!(client.deadline(), None);
    let soon = Instant::now() + Duration::from_secs(5);
    let later = soon + Duration::from_secs(60);
    let bounded = client.until(soon);
    assert!(Arc::ptr_eq(&client.inner, &bounded.inner));
    assert_eq!(bounded.deadline(), Some(soon));
    assert_eq!(bounded.until(later).deadline(), Some(soon));
    assert_eq!(client.until(later).until(soon).deadline(), Some(soon));
    assert_eq!(client.deadline(), None, "the original is unchanged");
    fn shared<T: Clone + Send + Sync>(_: &T) {}
    shared(&bounded);
}

#[test]
fn config_debug_shows_the_portal_host_only() {
    let config = ClientConfig::new(
        "https://user:pa55word@org.example.com/sharing/rest?token=SECRET123",
        Credentials::ApiKey(crate::arcgis::Secret::new("AAPK-SECRET-KEY")),
    );
    let dbg = format!("{config:?}");
    for secret in ["pa55word", "SECRET123", "AAPK-SECRET-KEY"] {
        assert!(!dbg.contains(secret), "{dbg}");
    }
    assert!(dbg.contains("https://org.example.com"), "{dbg}");
}

#[test]
fn client_debug_redacts_credentials() {
    let client = Client::new(ClientConfig::new(
        "https://org.example.com",
        Credentials::UserPassword {
            username: "admin".into(),
            password: crate::arcgis::Secret::new("hunter22"),
        },
    ))
    .unwrap();
    let dbg = format!("{client:?}");
    assert!(!dbg.contains("hunter22") && dbg.contains("admin"), "{dbg}");
    assert!(!dbg.contains("sharing/rest"), "the portal's host only: {dbg}");
}
