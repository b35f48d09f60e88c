//! Admin login and sessions (docs/reference/api.md §1.2–1.3; docs/reference/api-admin.md Login and
//! sessions; docs/reference/security.md §3, §4, §7): login and its refusals, the cookie,
//! `/auth/me`, logout, the login rate limit per client address, sessions ending when the admin
//! credentials change, the hash form of `ADMIN_PASSWORD`, CSRF on cookie writes, session-only
//! routes, and that no secret reaches the manager's log. Every manager of this binary logs into a
//! buffer (debug level) that the last test searches.

mod common;

use common::admin::{self, expect, from_client, request, try_login, Admin, EMAIL, PASSWORD};
use common::{TestManager, KEY};
use http::{Method, StatusCode};
use serde_json::{json, Value};

async fn manager(extra: &[(&str, &str)]) -> Option<TestManager> {
    admin::capture_logs();
    let vhost = common::manager_prerequisites("api_auth")?;
    Some(TestManager::start(None, &vhost, extra).await)
}

fn cookie_attributes(r: &common::Resp) -> Vec<String> {
    let set = r.headers["set-cookie"].to_str().unwrap();
    set.split(';').map(|a| a.trim().to_string()).collect()
}

async fn me(tm: &TestManager, cookie: &str) -> common::Resp {
    tm.send(request(
        Method::GET,
        "/auth/me",
        &[("cookie", cookie)],
        None,
    ))
    .await
}

#[tokio::test]
async fn login_me_and_logout() {
    let Some(tm) = manager(&[]).await else { return };
    let client = "192.0.2.7";
    let login = |email: &str, password: &str| {
        let body = json!({"email": email, "password": password});
        from_client(
            request(Method::POST, "/auth/login", &[], Some(body)),
            client,
        )
    };
    // One message for either mismatch; the email is compared exactly.
    for (email, password) in [
        (EMAIL, "wrong-password"),
        ("other@example.com", PASSWORD),
        ("Admin@example.com", PASSWORD),
    ] {
        let r = tm.send(login(email, password)).await;
        expect(&r, StatusCode::UNAUTHORIZED, "Invalid credentials");
        assert!(r.headers.get("set-cookie").is_none());
    }
    for body in [
        json!({}),
        json!({"email": EMAIL}),
        json!({"password": PASSWORD}),
        json!({"email": EMAIL, "password": ""}),
        json!({"email": EMAIL, "password": 12345}),
        json!({"email": null, "password": PASSWORD}),
    ] {
        let r = tm
            .send(request(Method::POST, "/auth/login", &[], Some(body)))
            .await;
        expect(
            &r,
            StatusCode::BAD_REQUEST,
            "email and password are required",
        );
    }
    let raw = |ct: &str, body: String| {
        http::Request::builder()
            .method(Method::POST)
            .uri("/auth/login")
            .header("content-type", ct)
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let r = tm.send(raw("text/plain", "{}".into())).await;
    expect(
        &r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type",
    );
    let r = tm.send(raw("application/json", "[]".into())).await;
    expect(
        &r,
        StatusCode::BAD_REQUEST,
        "Request body must be a JSON object",
    );
    let big = json!({"email": EMAIL, "password": "x".repeat(17 * 1024)}).to_string();
    let r = tm.send(raw("application/json", big)).await;
    expect(&r, StatusCode::PAYLOAD_TOO_LARGE, "Body too large");

    let r = tm.send(login(EMAIL, PASSWORD)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let attrs = cookie_attributes(&r);
    let token = attrs[0].strip_prefix("rds_session=").unwrap().to_string();
    assert_eq!(token.len(), 43, "32 random bytes in base64url");
    for want in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(attrs.iter().any(|a| a == want), "{want} in {attrs:?}");
    }
    assert!(!attrs.iter().any(|a| a == "Secure"), "{attrs:?}");
    assert_eq!(r.json["email"], EMAIL);
    let csrf = r.json["csrfToken"].as_str().unwrap().to_string();
    assert_eq!(csrf.len(), 43);
    let expires = chrono::DateTime::parse_from_rfc3339(r.json["expiresAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let ttl = expires - chrono::Utc::now();
    assert!(
        (chrono::Duration::hours(12) - ttl).num_seconds().abs() < 60,
        "{ttl}"
    );

    let cookie = format!("rds_session={token}");
    let r = me(&tm, &cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json,
        json!({"email": EMAIL, "csrfToken": csrf, "expiresAt": r.json["expiresAt"]})
    );
    let r = tm.send(request(Method::GET, "/auth/me", &[], None)).await;
    expect(&r, StatusCode::UNAUTHORIZED, "Unauthorized");
    let forged = format!("rds_session={}", "A".repeat(43));
    expect(
        &me(&tm, &forged).await,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
    );
    // The session authenticates every /v1 route and /metrics.
    let with_cookie = |path: &str| request(Method::GET, path, &[("cookie", &cookie)], None);
    assert_eq!(tm.send(with_cookie("/v1/vms")).await.status, StatusCode::OK);
    assert_eq!(
        tm.send(with_cookie("/metrics")).await.status,
        StatusCode::OK
    );
    let r = tm.send(with_cookie("/v1/nothing-here")).await;
    expect(&r, StatusCode::NOT_FOUND, "Not Found");

    let r = tm
        .send(request(
            Method::POST,
            "/auth/logout",
            &[("cookie", &cookie)],
            None,
        ))
        .await;
    assert_eq!((r.status, &r.json), (StatusCode::OK, &json!({"ok": true})));
    let attrs = cookie_attributes(&r);
    assert_eq!(attrs[0], "rds_session=");
    assert!(attrs.iter().any(|a| a == "Max-Age=0"), "{attrs:?}");
    expect(
        &me(&tm, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
    );
    let r = tm.send(with_cookie("/v1/vms")).await;
    expect(&r, StatusCode::UNAUTHORIZED, "Unauthorized");
    let r = tm
        .send(request(Method::POST, "/auth/logout", &[], None))
        .await;
    assert_eq!((r.status, &r.json), (StatusCode::OK, &json!({"ok": true})));

    // Activity: the login and the three failures (not the 400s), with the client address.
    let ok = admin::event(&tm, "auth.login", Some(EMAIL)).await;
    assert_eq!(admin::meta(&ok), json!({"clientAddress": client}));
    let events = admin::activity(&tm).await;
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "auth.login_failed")
        .collect();
    assert_eq!(failed.len(), 3, "{events:?}");
    assert_eq!(admin::meta(failed[0]), json!({"clientAddress": client}));
    assert_eq!(failed[0]["entityId"], Value::Null);
    let text = serde_json::to_string(&events).unwrap();
    for secret in [PASSWORD, "wrong-password", &token, &csrf] {
        assert!(!text.contains(secret), "{secret} in activity");
    }
}

#[tokio::test]
async fn login_is_limited_per_client_address() {
    let Some(tm) = manager(&[("RATE_LIMIT_LOGIN", "3")]).await else {
        return;
    };
    let attempt = |client: &'static str, password: &'static str| {
        let body = json!({"email": EMAIL, "password": password});
        from_client(
            request(Method::POST, "/auth/login", &[], Some(body)),
            client,
        )
    };
    for i in 0..3 {
        let r = tm.send(attempt("198.51.100.1", "wrong")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers["x-ratelimit-limit"], "3");
        assert_eq!(
            r.headers["x-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    // Over the limit even with the right password.
    let r = tm.send(attempt("198.51.100.1", PASSWORD)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    expect(
        &r,
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Rate limit exceeded, retry in {retry} seconds"),
    );
    assert!(r.headers.get("set-cookie").is_none());
    // Another address has its own budget; /auth/me and logout are not limited.
    let r = tm.send(attempt("198.51.100.2", PASSWORD)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    for _ in 0..5 {
        let r = tm
            .send(from_client(
                request(Method::GET, "/auth/me", &[], None),
                "198.51.100.1",
            ))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn sessions_end_when_the_admin_credentials_change() {
    let Some(mut tm) = manager(&[]).await else {
        return;
    };
    let first = admin::login(&tm).await;
    // A restart with the same credentials keeps sessions (they live in the DB).
    tm.restart().await.unwrap();
    assert_eq!(me(&tm, &first.cookie).await.status, StatusCode::OK);

    // ADMIN_PASSWORD as an argon2id hash; cookies Secure, sessions one hour.
    let phc = rds_manager::auth::hashing::Pool::default()
        .hash(b"hashed-secret-pw".to_vec())
        .await
        .unwrap();
    tm.settings.admin_password = phc.clone();
    tm.settings.cookie_secure = true;
    tm.settings.session_ttl_hours = 1;
    tm.restart().await.unwrap();
    expect(
        &me(&tm, &first.cookie).await,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
    );
    let r = tm
        .send(request(
            Method::GET,
            "/v1/vms",
            &[("cookie", &first.cookie)],
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for wrong in [PASSWORD, phc.as_str()] {
        let r = try_login(&tm, EMAIL, wrong).await;
        expect(&r, StatusCode::UNAUTHORIZED, "Invalid credentials");
    }
    let r = try_login(&tm, EMAIL, "hashed-secret-pw").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let attrs = cookie_attributes(&r);
    for want in ["Secure", "Max-Age=3600", "HttpOnly"] {
        assert!(attrs.iter().any(|a| a == want), "{want} in {attrs:?}");
    }
    let second = format!("rds_session={}", &attrs[0]["rds_session=".len()..]);
    assert_eq!(me(&tm, &second).await.status, StatusCode::OK);

    // A new ADMIN_EMAIL ends it too.
    tm.settings.admin_email = "root@example.com".into();
    tm.restart().await.unwrap();
    assert_eq!(me(&tm, &second).await.status, StatusCode::UNAUTHORIZED);
    let r = try_login(&tm, "root@example.com", "hashed-secret-pw").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

async fn image_count(tm: &TestManager) -> usize {
    tm.ids("/v1/images").await.len()
}

#[tokio::test]
async fn csrf_guards_cookie_writes() {
    let Some(tm) = manager(&[]).await else { return };
    let admin = admin::login(&tm).await;
    let host = ("host", "console.test:3000");
    let create = |extra: &[(&str, &str)]| {
        let mut headers = vec![("cookie", admin.cookie.as_str()), host];
        headers.extend_from_slice(extra);
        let body = json!({"name": "csrf", "description": "d"});
        request(Method::POST, "/v1/images", &headers, Some(body))
    };
    let refused: [&[(&str, &str)]; 5] = [
        &[],
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
        &[("referer", "http://evil.example/console/")],
        &[("x-rds-csrf", "not-the-token")],
    ];
    for extra in refused {
        let r = tm.send(create(extra)).await;
        expect(&r, StatusCode::FORBIDDEN, "CSRF check failed");
    }
    assert_eq!(image_count(&tm).await, 0, "refused writes change nothing");
    let csrf = admin.csrf.as_str();
    let passed: [&[(&str, &str)]; 4] = [
        &[("origin", "http://console.test:3000")],
        &[("referer", "http://console.test:3000/console/images")],
        &[("origin", "http://evil.example"), ("x-rds-csrf", csrf)],
        // A valid API key needs no CSRF proof, whatever cookie comes with it.
        &[("origin", "http://evil.example"), ("x-api-key", KEY)],
    ];
    for extra in passed {
        let r = tm.send(create(extra)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{extra:?}: {}", r.json);
    }
    assert_eq!(image_count(&tm).await, 4);
    // Reads need no proof; DELETE does.
    let id = tm.ids("/v1/images").await[0].clone();
    let get = request(
        Method::GET,
        &format!("/v1/images/{id}"),
        &[("cookie", &admin.cookie), ("origin", "http://evil.example")],
        None,
    );
    assert_eq!(tm.send(get).await.status, StatusCode::OK);
    let delete = |extra: &[(&str, &str)]| {
        let mut headers = vec![("cookie", admin.cookie.as_str()), host];
        headers.extend_from_slice(extra);
        request(Method::DELETE, &format!("/v1/images/{id}"), &headers, None)
    };
    let r = tm.send(delete(&[("origin", "http://evil.example")])).await;
    expect(&r, StatusCode::FORBIDDEN, "CSRF check failed");
    assert_eq!(image_count(&tm).await, 4);
    let r = tm.send(delete(&[("x-rds-csrf", csrf)])).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    // Routing comes before the CSRF check: an unknown path is a 404.
    let r = tm
        .send(request(
            Method::POST,
            "/v1/nothing-here",
            &[("cookie", &admin.cookie)],
            None,
        ))
        .await;
    expect(&r, StatusCode::NOT_FOUND, "Not Found");
}

#[tokio::test]
async fn session_only_routes_refuse_api_keys() {
    let Some(tm) = manager(&[]).await else { return };
    let admin = admin::login(&tm).await;
    let (_, db_key) = admin::create_key(&tm, &admin, "ci").await;
    let any_id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let revoke = format!("/v1/admin/api-keys/{any_id}/revoke");
    let routes: [(Method, &str, Option<Value>); 5] = [
        (Method::GET, "/v1/admin/api-keys", None),
        (
            Method::POST,
            "/v1/admin/api-keys",
            Some(json!({"name": "x"})),
        ),
        // The guard comes before body validation.
        (
            Method::POST,
            "/v1/admin/api-keys",
            Some(json!({"name": ""})),
        ),
        (Method::POST, &revoke, None),
        (Method::GET, "/v1/admin/events", None),
    ];
    for (method, path, body) in routes {
        for key in [KEY, db_key.as_str()] {
            let r = tm
                .send(request(
                    method.clone(),
                    path,
                    &[("x-api-key", key)],
                    body.clone(),
                ))
                .await;
            expect(&r, StatusCode::FORBIDDEN, "Admin session required");
        }
        let r = tm
            .send(request(method.clone(), path, &[], body.clone()))
            .await;
        expect(&r, StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    // Only the admin's own key exists; the activity feed is open to keys.
    let r = admin
        .call(&tm, Method::GET, "/v1/admin/api-keys", None)
        .await;
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{}", r.json);
    let r = admin::with_key(&tm, &db_key, "/v1/admin/activity").await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Passwords, keys, session cookies and CSRF tokens never appear in the log, which also holds the
/// lines of every other manager of this binary that ran before or beside this one.
#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let Some(tm) = manager(&[]).await else { return };
    let r = try_login(&tm, EMAIL, "wrong-password-77").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let admin: Admin = admin::login(&tm).await;
    let (_, db_key) = admin::create_key(&tm, &admin, "logged").await;
    assert_eq!(
        admin::with_key(&tm, &db_key, "/v1/vms").await.status,
        StatusCode::OK
    );
    let r = tm
        .send(request(
            Method::GET,
            "/metrics",
            &[("authorization", &format!("Bearer {db_key}"))],
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = admin
        .call(
            &tm,
            Method::POST,
            "/v1/images",
            Some(json!({"name": "n", "description": "d"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = tm
        .send(request(
            Method::POST,
            "/auth/logout",
            &admin.headers(),
            None,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let log = admin::captured_logs();
    assert!(
        log.contains("request") && log.contains("/auth/login"),
        "the capture works: {}",
        &log[..log.len().min(2000)]
    );
    let token = admin.cookie.trim_start_matches("rds_session=");
    // After `rds_<12 hex>_`; the secret itself may hold `_`.
    let secret_part = &db_key[17..];
    assert!(secret_part.len() >= 32, "{db_key}");
    for secret in [
        PASSWORD,
        "wrong-password-77",
        KEY,
        db_key.as_str(),
        secret_part,
        token,
        admin.csrf.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} was logged");
    }
}
