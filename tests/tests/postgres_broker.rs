//! The built-in service broker end to end: `wfd broker` on the PostgreSQL server of
//! `WF_TEST_POSTGRES_URL` (skipped, with a note, when it is unset; `.ci/run` sets it),
//! registered with `wf create-service-broker`, made visible, provisioned with
//! `wf create-service postgresql shared`, bound to the `env` fixture app, whose
//! `VCAP_SERVICES` then carries credentials this test logs in with. Unbinding, deleting
//! a service key and deleting the instance drop the role and the database on the
//! server, and the password shows in no app log or audit event.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};
use wf_tests::platform::{Platform, Process};

const BROKER_USER: &str = "broker";
const BROKER_PASSWORD: &str = "broker-e2e-pass";

/// Polls `check` until it holds, or panics with `what` after `within`.
fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The server's catalogs, through an admin connection.
struct Server {
    runtime: tokio::runtime::Runtime,
    admin: String,
}

impl Server {
    fn exists(&self, sql: &str, name: &str) -> bool {
        self.runtime.block_on(async {
            let mut conn = PgConnection::connect(&self.admin).await.unwrap();
            sqlx::query(sql)
                .bind(name)
                .fetch_optional(&mut conn)
                .await
                .unwrap()
                .is_some()
        })
    }

    fn has_role(&self, name: &str) -> bool {
        self.exists("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    }

    fn has_database(&self, name: &str) -> bool {
        self.exists("SELECT 1 FROM pg_database WHERE datname = $1", name)
    }

    /// Logs in with `uri`, makes a table and reads a row back.
    fn use_database(&self, uri: &str) -> Result<String, sqlx::Error> {
        self.runtime.block_on(async {
            let mut conn = PgConnection::connect(uri).await?;
            conn.execute("CREATE TABLE IF NOT EXISTS greetings (text TEXT NOT NULL)")
                .await?;
            conn.execute("INSERT INTO greetings VALUES ('hello from the test')")
                .await?;
            let text: String = sqlx::query_scalar("SELECT text FROM greetings LIMIT 1")
                .fetch_one(&mut conn)
                .await?;
            conn.close().await?;
            Ok(text)
        })
    }
}

#[test]
fn a_database_from_the_built_in_broker_reaches_a_bound_app() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The broker's records go in a fresh database of its own, dropped at the end.
    let Some(admin_db) = runtime.block_on(wf_db::testing::postgres()) else {
        eprintln!(
            "skipping: the broker needs a PostgreSQL server ({})",
            wf_db::testing::POSTGRES_ENV
        );
        return;
    };
    let server = Server {
        runtime,
        admin: admin_db.url().to_string(),
    };
    let args: Vec<OsString> = vec![
        "broker".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--postgres-url".into(),
        admin_db.url().into(),
        "--username".into(),
        BROKER_USER.into(),
        "--password".into(),
        BROKER_PASSWORD.into(),
    ];
    let broker = Process::start("broker", args);
    let broker_url = format!(
        "http://{}",
        broker.line_after("broker: http://", Duration::from_secs(60))
    );

    let platform = Platform::shared();
    let wf = platform.user();
    wf.ok(&[
        "create-service-broker",
        "e2e-postgres",
        BROKER_USER,
        BROKER_PASSWORD,
        &broker_url,
    ]);
    wf.ok(&["enable-service-access", "postgresql"]);
    let out = wf.ok(&["marketplace"]);
    assert!(
        out.contains("postgresql") && out.contains("shared") && out.contains("e2e-postgres"),
        "{out}"
    );

    wf.push_fixture("pg-env", "env");
    let out = wf.ok(&["create-service", "postgresql", "shared", "db", "--wait"]);
    assert!(out.contains("Service instance db created."), "{out}");
    wf.ok(&["bind-service", "pg-env", "db"]);
    wf.ok(&["restart", "pg-env"]);

    let vcap = platform.vcap_services("pg-env");
    let entry = &vcap["postgresql"][0];
    assert_eq!(entry["name"], "db", "{vcap}");
    assert_eq!(entry["label"], "postgresql");
    assert_eq!(entry["plan"], "shared");
    let credentials = &entry["credentials"];
    let field = |name: &str| -> String {
        credentials[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {credentials}"))
            .to_string()
    };
    let (uri, database, role, password) = (
        field("uri"),
        field("name"),
        field("username"),
        field("password"),
    );
    assert!(credentials["port"].is_u64(), "{credentials}");
    assert!(field("jdbcUrl").starts_with("jdbc:postgresql://"));
    assert!(!field("hostname").is_empty());
    assert_eq!(
        server
            .use_database(&uri)
            .expect("the bound credentials work"),
        "hello from the test"
    );
    assert!(server.has_database(&database) && server.has_role(&role));

    // A service key is a binding of its own, with a role of its own.
    wf.ok(&["create-service-key", "db", "k1"]);
    let key_role = service_key_role(&wf.ok(&["service-key", "db", "k1"]));
    assert_ne!(key_role, role);
    assert!(server.has_role(&key_role));
    wf.ok(&["delete-service-key", "db", "k1", "-f"]);
    eventually(
        "the service key's role is dropped",
        Duration::from_secs(60),
        || !server.has_role(&key_role),
    );

    // The password is the app's: never in its logs or the audit trail.
    let logs = wf.ok(&["logs", "pg-env", "--recent"]);
    assert!(!logs.contains(&password), "the password is in wf logs");
    let events = wf.ok(&["curl", "/v3/audit_events?per_page=5000"]);
    assert!(events.contains("audit.service_binding.create"), "{events}");
    assert!(
        !events.contains(&password),
        "the password is in audit events"
    );
    for listing in [wf.ok(&["services"]), wf.ok(&["service", "db"])] {
        assert!(!listing.contains(&password), "{listing}");
    }

    // Unbinding drops the role: the credentials stop working.
    wf.ok(&["unbind-service", "pg-env", "db"]);
    eventually(
        "the binding's role is dropped",
        Duration::from_secs(60),
        || !server.has_role(&role),
    );
    assert!(server.use_database(&uri).is_err());
    assert!(server.has_database(&database));

    // Deleting the instance drops the database.
    let out = wf.ok(&["delete-service", "db", "-f"]);
    assert!(out.contains("Service instance db deleted."), "{out}");
    eventually("the database is dropped", Duration::from_secs(60), || {
        !server.has_database(&database)
    });
    assert!(!server.has_role(&format!("{database}_owner")));
    wf.ok(&["delete-service-broker", "e2e-postgres", "-f"]);
}

/// The `username` of the credentials `wf service-key` prints (JSON after a header).
fn service_key_role(out: &str) -> String {
    let json = &out[out.find('{').unwrap_or_else(|| panic!("no JSON in {out}"))..];
    let credentials: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"));
    let credentials = credentials.get("credentials").unwrap_or(&credentials);
    credentials["username"]
        .as_str()
        .unwrap_or_else(|| panic!("no username in {out}"))
        .to_string()
}
