//! A fresh Postgres database per test, made on the server `RDS_TEST_DATABASE_URL` names
//! (`scripts/test-postgres.sh` starts one and prints its URL; `scripts/test.sh` exports it).

use sqlx::{Connection, Executor, PgConnection};
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming a database whose role may `CREATE DATABASE`.
pub const TEST_DATABASE_URL: &str = "RDS_TEST_DATABASE_URL";

/// An empty database made for one test; dropped, open connections included, when this value drops.
pub struct TestPostgres {
    admin_url: String,
    name: String,
    url: String,
}

impl TestPostgres {
    /// A new database, or `None` after [`crate::skip`] when `RDS_TEST_DATABASE_URL` is unset (which
    /// fails the test under `RDS_REQUIRE_E2E=1`). A set variable whose server cannot make the
    /// database fails the test: that is a broken setup, not a missing one.
    pub async fn create(test: &str) -> Option<TestPostgres> {
        let Some(admin_url) = std::env::var(TEST_DATABASE_URL)
            .ok()
            .filter(|v| !v.is_empty())
        else {
            crate::skip(
                test,
                "RDS_TEST_DATABASE_URL is unset (scripts/test-postgres.sh starts a server and prints one)",
            );
            return None;
        };
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag: String = test
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '_',
            })
            .take(32)
            .collect();
        let name = format!(
            "rds_t_{tag}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot connect to {TEST_DATABASE_URL}: {e}"));
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap_or_else(|e| panic!("{test}: CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        Some(TestPostgres {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        })
    }

    /// Connection URL of the test's database (same server, role and options as the variable's).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside a runtime, so the async cleanup gets a thread and a runtime of its own.
        let done = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await?;
                conn.close().await
            })
            .map_err(|e| e.to_string())
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test database {} not dropped: {e}", self.name),
            Err(_) => eprintln!("warning: test database {} not dropped", self.name),
        }
    }
}

/// `url` with its database (the path) replaced by `name`; user, host and query options kept.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (location, query) = match rest.split_once('?') {
        Some((l, q)) => (l, Some(q)),
        None => (rest, None),
    };
    let authority = location.split_once('/').map_or(location, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced() {
        assert_eq!(
            with_database("postgres://u@localhost/rds_test?host=/run/pg", "t1"),
            "postgres://u@localhost/t1?host=/run/pg"
        );
        assert_eq!(
            with_database("postgresql://u:p@db:5433", "t2"),
            "postgresql://u:p@db:5433/t2"
        );
        assert_eq!(with_database("postgres://u@h/x", "t3"), "postgres://u@h/t3");
    }
}
