//! Behind nginx: three instances round-robin over one Redis, a logout through
//! one honoured by all at once, a backend protected with `auth_request /auth`, and
//! the operators' routes (`/admin…`, `/metrics`) refused at the edge.
//! Uses the same nginx configuration as `scripts/lb-demo.sh`.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::*;

/// The nginx binary: on PATH, or where Debian puts it (`/usr/sbin` is not on a
/// non-root user's PATH).
fn nginx_binary() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|bin| bin.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: this test needs Debian's `nginx` package \
                 (scripts/test.sh installs it: apt-get install nginx)"
            )
        })
}

/// nginx as a child process with a configuration of its own in a scratch folder.
/// Stopped (SIGTERM, then SIGKILL) and the folder removed when dropped, also when
/// the start itself fails.
struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
    base: String,
}

impl Nginx {
    fn start(upstreams: [u16; 3]) -> Nginx {
        let bin = nginx_binary();
        let dir = std::env::temp_dir().join(format!(
            "wxsession-nginx-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (port, app) = (free_port(), free_port());
        let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let conf = include_str!("../../scripts/nginx-lb.conf.template")
            .replace("@USER_LINE@", if is_root { "user root;" } else { "" })
            .replace("@DIR@", dir.to_str().unwrap())
            .replace("@PORT@", &port.to_string())
            .replace("@APP@", &app.to_string())
            .replace("@UP1@", &upstreams[0].to_string())
            .replace("@UP2@", &upstreams[1].to_string())
            .replace("@UP3@", &upstreams[2].to_string());
        // Placeholders look like @NAME@ (nginx's own named locations are @lower).
        let unfilled = conf
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| {
                l.split('@').skip(1).step_by(2).any(|name| {
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
            });
        assert!(
            !unfilled,
            "a placeholder of the template is left unfilled:\n{conf}"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new(&bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        // From here on Drop stops nginx, whatever happens.
        let mut nginx = Nginx {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = nginx.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "nginx did not start ({}): {}",
                exited.map_or("no listener within 10 s".into(), |s| s.to_string()),
                nginx.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn logs(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Instance for Nginx {
    fn base(&self) -> &str {
        &self.base
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn guard_ok(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("wxsession_guard_checks_total{outcome=\"ok\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[actix_web::test]
async fn three_instances_behind_nginx_share_sessions_and_guard_a_backend() {
    let started = Instant::now();
    let h = Harness::bare();
    let instances: Vec<ServerProcess> = (0..3).map(|_| h.start_process(&[])).collect();
    let ports: Vec<u16> = instances
        .iter()
        .map(|i| i.base.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let nginx = Nginx::start([ports[0], ports[1], ports[2]]);
    let ready = started.elapsed();

    let (status, body) = nginx.try_login("ok:nina").await;
    assert_eq!(status, 200, "{body}");
    let id = body["sessionid"].as_str().unwrap().to_string();

    for _ in 0..30 {
        let (status, me) = nginx.get_session(&id).await;
        assert_eq!(status, 200);
        assert_eq!(me["openid"], "nina");
    }
    let mut spread = Vec::new();
    for instance in &instances {
        spread.push(guard_ok(&instance.metrics().await));
    }
    println!("30 guarded requests through nginx, per instance: {spread:?}");
    assert!(
        spread.iter().all(|n| *n > 0),
        "every instance served: {spread:?}"
    );
    assert_eq!(spread.iter().sum::<u64>(), 30);

    // The protected backend sees the openid; without a live session nginx says 401.
    for path in ["/protected/", "/protected/orders"] {
        let resp = client()
            .get(nginx.url(path))
            .header("sessionid", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.text().await.unwrap().trim(), "hello nina", "{path}");
    }
    // A client cannot forge the identity header, nor call the auth location itself.
    let resp = client()
        .get(nginx.url("/protected/orders"))
        .header("sessionid", &id)
        .header("X-WX-OpenID", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap().trim(), "hello nina");
    let resp = client()
        .get(nginx.url("/_wxauth"))
        .header("sessionid", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "/_wxauth is internal to nginx");
    let resp = client()
        .get(nginx.url("/protected/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, body) = send(
        client()
            .get(nginx.url("/protected/orders"))
            .header("sessionid", "0123456789abcdef0123456789abcdef"),
    )
    .await;
    assert_eq!(status, 401);
    // In the contract's shape, so a client knows to log in again.
    assert_error(&body, "invalid_session");

    // Logout through nginx (one instance): every instance rejects the id at once.
    let (status, _) = nginx.logout(&id).await;
    assert_eq!(status, 204);
    for instance in &instances {
        let (status, body) = instance.get_session(&id).await;
        assert_eq!(status, 401, "{body}");
        assert_error(&body, "invalid_session");
    }
    let resp = client()
        .get(nginx.url("/protected/orders"))
        .header("sessionid", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "a logged-out session no longer opens the backend"
    );
    println!(
        "redis + 3 instances + nginx ready in {ready:?}; whole test {:?}",
        started.elapsed()
    );
}

/// The sample configuration keeps operators' routes off the public edge: the
/// admin routes (whatever the token) and `/metrics` are refused through nginx,
/// while the instances themselves still serve them and the API goes through.
#[actix_web::test]
async fn nginx_refuses_admin_routes_and_metrics_from_outside() {
    let h = Harness::bare();
    let instances: Vec<ServerProcess> = (0..3)
        .map(|_| h.start_process(&[("admin.token", ADMIN_TOKEN)]))
        .collect();
    let ports: Vec<u16> = instances
        .iter()
        .map(|i| i.base.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let nginx = Nginx::start([ports[0], ports[1], ports[2]]);
    let bearer = format!("Bearer {ADMIN_TOKEN}");

    // The API works through nginx.
    let id = nginx.login("ok:olga").await;
    let (status, me) = nginx.get_session(&id).await;
    assert_eq!((status, &me["openid"]), (200, &serde_json::json!("olga")));

    // Operators' routes do not, however they are spelt.
    let refused = [
        ("GET", "/admin/users/olga/sessions"),
        ("DELETE", "/admin/users/olga/sessions"),
        ("GET", "/admin/wechat/access-token"),
        ("GET", "//admin/users/olga/sessions"),
        ("GET", "/%61dmin/users/olga/sessions"),
        ("GET", "/session/../admin/users/olga/sessions"),
        ("GET", "/admin"),
        ("GET", "/metrics"),
        ("GET", "/metrics?format=text"),
        ("GET", "//metrics"),
    ];
    for (method, path) in refused {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: lb\r\nAuthorization: {bearer}\r\n\
             Connection: close\r\n\r\n"
        );
        let answer = raw_exchange(&nginx.base, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{method} {path} through nginx: {answer}"
        );
        assert!(
            !answer.contains("olga") && !answer.contains("wxsession_"),
            "{method} {path}: {answer}"
        );
    }

    // The instances themselves still serve them (the refusal is nginx's).
    let direct = &instances[0];
    let (status, body) = send(
        client()
            .get(direct.url("/admin/users/olga/sessions"))
            .header("authorization", &bearer),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"][0]["sessionid"], id.as_str());
    assert!(direct.metrics().await.contains("wxsession_"));

    // And the session is untouched by the refused DELETE.
    let (status, _) = nginx.get_session(&id).await;
    assert_eq!(status, 200);
}
