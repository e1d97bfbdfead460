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
fn a_lambda_deadline_in_epoch_ms_becomes_an_instant_without_panicking() {
    let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let before = Instant::now();
    let d = deadline_from_epoch_ms(now_ms + 60_000, Duration::from_secs(10));
    let left = d.saturating_duration_since(before);
    assert!(
        left > Duration::from_secs(45) && left <= Duration::from_secs(50),
        "{left:?}"
    );
    // Past, closer than the margin, absurd: never a panic.
    let now = Instant::now();
    assert!(deadline_from_epoch_ms(0, Duration::ZERO) <= Instant::now());
    assert!(deadline_from_epoch_ms(now_ms + 1_000, Duration::from_secs(5)) <= Instant::now());
    let far = deadline_from_epoch_ms(u64::MAX, Duration::MAX);
    assert!(far <= Instant::now());
    let far = deadline_from_epoch_ms(u64::MAX, Duration::ZERO);
    assert!(far.saturating_duration_since(now) <= MAX_TIME_LEFT + Duration::from_secs(1));
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
