//! The broker against a real PostgreSQL server (`WF_TEST_POSTGRES_URL`; skipped, with a
//! note, when it is unset, as the other storage tests are): the OSB API over HTTP on an
//! ephemeral port, each test with a fresh admin database of its own. Databases and
//! roles are checked in the server's catalogs, and credentials by logging in with them.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Executor as _};
use wf_broker::catalog::{PLAN_ID, SERVICE_ID};
use wf_broker::{Bind, Bound, Broker, BrokerConfig, Deleted, Provision, Provisioned};
use wf_db::testing::TestDatabase;

const USER: &str = "broker";
const PASSWORD: &str = "broker-pass";

struct Harness {
    broker: Broker,
    url: String,
    http: reqwest::Client,
    admin: String,
    _db: TestDatabase,
}

/// A broker on a fresh admin database, or `None` when no server is configured.
async fn start() -> Option<Harness> {
    let Some(db) = wf_db::testing::postgres().await else {
        eprintln!(
            "skipping: the broker needs a PostgreSQL server ({})",
            wf_db::testing::POSTGRES_ENV
        );
        return None;
    };
    let broker = Broker::open(BrokerConfig {
        postgres_url: db.url().to_string(),
        username: USER.into(),
        password: PASSWORD.into(),
    })
    .await
    .expect("opening the broker");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = broker.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Some(Harness {
        broker,
        url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        admin: db.url().to_string(),
        _db: db,
    })
}

impl Harness {
    /// A request as the platform sends it (basic auth, API version 2.17).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, Some((USER, PASSWORD)), Some("2.17"))
            .await
    }

    async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        auth: Option<(&str, &str)>,
        version: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(version) = version {
            request = request.header("X-Broker-API-Version", version);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("broker request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn provision(&self, instance: &str, space: &str) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("/v2/service_instances/{instance}?accepts_incomplete=true"),
            Some(provision_body(space)),
        )
        .await
    }

    async fn deprovision(&self, instance: &str) -> (u16, Value) {
        self.call(
            "DELETE",
            &format!("/v2/service_instances/{instance}?service_id={SERVICE_ID}&plan_id={PLAN_ID}"),
            None,
        )
        .await
    }

    async fn bind(&self, instance: &str, binding: &str, app: &str) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("/v2/service_instances/{instance}/service_bindings/{binding}"),
            Some(json!({
                "service_id": SERVICE_ID,
                "plan_id": PLAN_ID,
                "app_guid": app,
                "bind_resource": {"app_guid": app},
                "context": {"platform": "cloudfoundry"},
            })),
        )
        .await
    }

    async fn unbind(&self, instance: &str, binding: &str) -> (u16, Value) {
        self.call(
            "DELETE",
            &format!(
                "/v2/service_instances/{instance}/service_bindings/{binding}?service_id={SERVICE_ID}&plan_id={PLAN_ID}"
            ),
            None,
        )
        .await
    }

    async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.admin).await.unwrap()
    }

    /// Whether the server has database `name`, and role `name`.
    async fn exists(&self, what: &str, name: &str) -> bool {
        let sql = match what {
            "database" => "SELECT 1 FROM pg_database WHERE datname = $1",
            _ => "SELECT 1 FROM pg_roles WHERE rolname = $1",
        };
        let mut admin = self.admin().await;
        sqlx::query(sql)
            .bind(name)
            .fetch_optional(&mut admin)
            .await
            .unwrap()
            .is_some()
    }
}

fn provision_body(space: &str) -> Value {
    json!({
        "service_id": SERVICE_ID,
        "plan_id": PLAN_ID,
        "organization_guid": "org-guid",
        "space_guid": space,
        "context": {"platform": "cloudfoundry", "organization_guid": "org-guid", "space_guid": space},
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn assert_error_body(body: &Value) {
    assert!(body["error"].is_string(), "{body}");
    assert!(body["description"].is_string(), "{body}");
}

#[tokio::test]
async fn catalog_basic_auth_and_api_version_are_enforced() {
    let Some(h) = start().await else { return };
    let (status, catalog) = h.call("GET", "/v2/catalog", None).await;
    assert_eq!(status, 200, "{catalog}");
    assert_eq!(catalog["services"][0]["id"], SERVICE_ID);
    assert_eq!(catalog["services"][0]["name"], "postgresql");
    assert_eq!(catalog["services"][0]["plans"][0]["id"], PLAN_ID);

    for auth in [None, Some((USER, "wrong")), Some(("other", PASSWORD))] {
        let (status, body) = h
            .call_with("GET", "/v2/catalog", None, auth, Some("2.17"))
            .await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert_error_body(&body);
    }
    // Without auth, nothing else is told: not even whether the route exists.
    let (status, _) = h
        .call_with("PUT", "/v2/service_instances/x", None, None, None)
        .await;
    assert_eq!(status, 401);

    for version in [None, Some("2.13"), Some("1.0"), Some("banana")] {
        let (status, body) = h
            .call_with("GET", "/v2/catalog", None, Some((USER, PASSWORD)), version)
            .await;
        assert_eq!(status, 412, "{version:?}: {body}");
        assert_error_body(&body);
    }
    let (status, body) = h.call("GET", "/v2/nothing", None).await;
    assert_eq!(status, 404);
    assert_error_body(&body);
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_spec_error_body() {
    let Some(h) = start().await else { return };
    let instance = new_id();
    let path = format!("/v2/service_instances/{instance}");
    let mut bodies = vec![
        json!({"service_id": "nope", "plan_id": PLAN_ID, "organization_guid": "o", "space_guid": "s"}),
        json!({"service_id": SERVICE_ID, "plan_id": "nope", "organization_guid": "o", "space_guid": "s"}),
        json!({"service_id": SERVICE_ID, "plan_id": PLAN_ID, "space_guid": "s"}),
        json!({"service_id": SERVICE_ID, "plan_id": PLAN_ID, "organization_guid": "", "space_guid": "s"}),
        json!({"service_id": 7, "plan_id": PLAN_ID, "organization_guid": "o", "space_guid": "s"}),
        json!([1, 2]),
    ];
    let mut with_parameters = provision_body("s");
    with_parameters["parameters"] = json!({"size": "huge"});
    bodies.push(with_parameters);
    for body in bodies {
        let (status, answer) = h.call("PUT", &path, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_error_body(&answer);
    }
    // Not JSON at all.
    let response = h
        .http
        .put(format!("{}{path}", h.url))
        .basic_auth(USER, Some(PASSWORD))
        .header("X-Broker-API-Version", "2.17")
        .header("Content-Type", "application/json")
        .body("{\"service_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_error_body(&response.json().await.unwrap());
    // Nothing was made.
    let (status, _) = h.call("GET", &path, None).await;
    assert_eq!(status, 404);

    // Deletes need the catalog's ids.
    for query in [
        "",
        "?service_id=nope&plan_id=nope",
        &format!("?service_id={SERVICE_ID}"),
    ] {
        let (status, body) = h.call("DELETE", &format!("{path}{query}"), None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_error_body(&body);
    }
    // Unknown instances and bindings.
    assert_eq!(h.deprovision(&instance).await.0, 410);
    let (status, body) = h.bind(&instance, &new_id(), "app").await;
    assert_eq!(status, 404, "{body}");
    assert_error_body(&body);
    assert_eq!(h.unbind(&instance, &new_id()).await.0, 410);
    let too_long = "x".repeat(300);
    assert_eq!(h.provision(&too_long, "s").await.0, 400);
}

#[tokio::test]
async fn provision_bind_unbind_deprovision_on_the_server() {
    let Some(h) = start().await else { return };
    let instance = new_id();

    // Provision, then the same again (200), then a conflicting one (409).
    let (status, body) = h.provision(&instance, "space-1").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(h.provision(&instance, "space-1").await.0, 200);
    let (status, body) = h.provision(&instance, "space-2").await;
    assert_eq!(status, 409, "{body}");
    assert_error_body(&body);
    let (status, fetched) = h
        .call("GET", &format!("/v2/service_instances/{instance}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        fetched,
        json!({"service_id": SERVICE_ID, "plan_id": PLAN_ID})
    );
    // Updates change nothing: without parameters they succeed, with some they are
    // refused, and an unknown instance has none.
    let update = |parameters: Value| json!({"service_id": SERVICE_ID, "plan_id": PLAN_ID, "parameters": parameters});
    let path = format!("/v2/service_instances/{instance}");
    assert_eq!(h.call("PATCH", &path, Some(update(json!({})))).await.0, 200);
    let (status, body) = h
        .call("PATCH", &path, Some(update(json!({"size": 2}))))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_error_body(&body);
    let unknown = format!("/v2/service_instances/{}", new_id());
    assert_eq!(
        h.call("PATCH", &unknown, Some(update(json!({})))).await.0,
        404
    );

    // A binding: CF's credential shape, and they work.
    let first = new_id();
    let (status, body) = h.bind(&instance, &first, "app-1").await;
    assert_eq!(status, 201, "{body}");
    let credentials = &body["credentials"];
    for field in ["uri", "jdbcUrl", "hostname", "name", "username", "password"] {
        assert!(credentials[field].is_string(), "{field}: {credentials}");
    }
    assert!(credentials["port"].is_u64(), "{credentials}");
    let database = credentials["name"].as_str().unwrap().to_string();
    let user = credentials["username"].as_str().unwrap().to_string();
    let password = credentials["password"].as_str().unwrap().to_string();
    let uri = credentials["uri"].as_str().unwrap().to_string();
    assert!(uri.starts_with("postgres://"), "{uri}");
    assert!(password.len() >= 32);
    assert!(h.exists("database", &database).await);
    assert!(h.exists("role", &user).await);
    // The server keeps a SCRAM verifier, never the password.
    let mut admin = h.admin().await;
    let stored: Option<String> =
        sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(&user)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    let stored = stored.unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    assert!(!stored.contains(&password));

    // The same bind again gives the same credentials; another app under its id is a
    // conflict.
    let (status, again) = h.bind(&instance, &first, "app-1").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["credentials"], *credentials);
    let (status, body) = h.bind(&instance, &first, "app-2").await;
    assert_eq!(status, 409, "{body}");
    let (status, fetched) = h
        .call(
            "GET",
            &format!("/v2/service_instances/{instance}/service_bindings/{first}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched["credentials"], *credentials);

    let mut app = PgConnection::connect(&uri)
        .await
        .expect("the binding logs in");
    app.execute("CREATE TABLE notes (id INT PRIMARY KEY, text TEXT NOT NULL)")
        .await
        .unwrap();
    app.execute("INSERT INTO notes VALUES (1, 'hello')")
        .await
        .unwrap();

    // A second binding sees (and may change) the first one's table.
    let second = new_id();
    let (status, body) = h.bind(&instance, &second, "app-2").await;
    assert_eq!(status, 201, "{body}");
    let second_uri = body["credentials"]["uri"].as_str().unwrap().to_string();
    assert_ne!(
        body["credentials"]["username"].as_str(),
        Some(user.as_str())
    );
    let mut other = PgConnection::connect(&second_uri).await.unwrap();
    let text: String = sqlx::query_scalar("SELECT text FROM notes WHERE id = 1")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(text, "hello");
    other
        .execute("INSERT INTO notes VALUES (2, 'from the second binding')")
        .await
        .unwrap();

    // Unbinding ends the first binding's session and its login, and only its own.
    let (status, body) = h.unbind(&instance, &first).await;
    assert_eq!((status, body), (200, json!({})));
    assert!(
        app.execute("SELECT 1").await.is_err(),
        "the unbound session still works"
    );
    assert!(PgConnection::connect(&uri).await.is_err());
    assert!(!h.exists("role", &user).await);
    assert_eq!(h.unbind(&instance, &first).await.0, 410);
    let (status, _) = h
        .call(
            "GET",
            &format!("/v2/service_instances/{instance}/service_bindings/{first}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert_eq!(count, 2, "the data stays with the instance");

    // Deprovisioning drops the database, the remaining binding's role and the owner,
    // even while the binding is connected.
    let second_user = uri_user(&second_uri);
    let (status, body) = h.deprovision(&instance).await;
    assert_eq!((status, body), (200, json!({})));
    assert!(other.execute("SELECT 1").await.is_err());
    assert!(!h.exists("database", &database).await);
    assert!(!h.exists("role", &second_user).await);
    let owners: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1 || '_owner'")
            .bind(&database)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(owners, 0);
    assert_eq!(h.deprovision(&instance).await.0, 410);
    let (status, _) = h
        .call("GET", &format!("/v2/service_instances/{instance}"), None)
        .await;
    assert_eq!(status, 404);
    // And the id may be used again.
    assert_eq!(h.provision(&instance, "space-2").await.0, 201);
    assert_eq!(h.deprovision(&instance).await.0, 200);
}

/// The user of a `postgres://user:password@...` URI.
fn uri_user(uri: &str) -> String {
    let rest = uri.strip_prefix("postgres://").unwrap();
    rest.split(':').next().unwrap().to_string()
}

#[tokio::test]
async fn a_binding_reaches_its_own_instance_only() {
    let Some(h) = start().await else { return };
    let (a, b) = (new_id(), new_id());
    assert_eq!(h.provision(&a, "s").await.0, 201);
    assert_eq!(h.provision(&b, "s").await.0, 201);
    let (_, bound_a) = h.bind(&a, &new_id(), "app").await;
    let (_, bound_b) = h.bind(&b, &new_id(), "app").await;
    let uri_a = bound_a["credentials"]["uri"].as_str().unwrap();
    let database_b = bound_b["credentials"]["name"].as_str().unwrap();

    let mut url = url::Url::parse(uri_a).unwrap();
    url.set_path(&format!("/{database_b}"));
    let err = PgConnection::connect(url.as_str())
        .await
        .expect_err("a binding of A connected to B's database");
    assert!(err.to_string().contains("permission denied"), "{err}");

    // Where the server checks passwords (not `trust`), a wrong one is refused.
    let mut wrong = url::Url::parse(uri_a).unwrap();
    wrong.set_password(Some("wrong")).unwrap();
    let mut admin = h.admin().await;
    let trusting: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_hba_file_rules WHERE auth_method = 'trust' AND 'host' = type)",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    if !trusting {
        assert!(PgConnection::connect(wrong.as_str()).await.is_err());
    }

    assert_eq!(h.deprovision(&a).await.0, 200);
    assert_eq!(h.deprovision(&b).await.0, 200);
}

#[tokio::test]
async fn concurrent_provisions_of_one_instance_take_turns() {
    let Some(h) = start().await else { return };
    let instance = new_id();
    let (one, two) = tokio::join!(
        h.provision(&instance, "space"),
        h.provision(&instance, "space")
    );
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{one:?} {two:?}");
    assert_eq!(h.deprovision(&instance).await.0, 200);
}

/// A provision or bind whose record was never written (the broker stopped half-way) is
/// finished by the platform's retry, and dropped by its deprovision or unbind.
#[tokio::test]
async fn calls_cut_short_are_finished_by_a_retry_or_dropped() {
    let Some(h) = start().await else { return };
    let mut admin = h.admin().await;
    const FORGET_BINDING: &str = "DELETE FROM wf_broker.bindings WHERE binding_id = $1";
    const FORGET_INSTANCE: &str = "DELETE FROM wf_broker.instances WHERE instance_id = $1";

    // A bind cut short: the role is there, the record is not. The retry makes it whole.
    let instance = new_id();
    assert_eq!(h.provision(&instance, "s").await.0, 201);
    let binding = new_id();
    let (_, bound) = h.bind(&instance, &binding, "app").await;
    let role = bound["credentials"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query(FORGET_BINDING)
        .bind(&binding)
        .execute(&mut admin)
        .await
        .unwrap();
    let (status, again) = h.bind(&instance, &binding, "app").await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["credentials"]["username"], role.as_str());
    let uri = again["credentials"]["uri"].as_str().unwrap();
    PgConnection::connect(uri)
        .await
        .expect("the retried binding logs in");

    // The same, and then the unbind finds the role without a record.
    sqlx::query(FORGET_BINDING)
        .bind(&binding)
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(h.unbind(&instance, &binding).await.0, 410);
    assert!(!h.exists("role", &role).await);

    // A provision cut short: database and owner there, no record. Deprovision drops them.
    let database = bound["credentials"]["name"].as_str().unwrap().to_string();
    sqlx::query(FORGET_INSTANCE)
        .bind(&instance)
        .execute(&mut admin)
        .await
        .unwrap();
    assert!(h.exists("database", &database).await);
    assert_eq!(h.deprovision(&instance).await.0, 410);
    assert!(!h.exists("database", &database).await);
    assert!(!h.exists("role", &format!("{database}_owner")).await);
}

/// The same work without HTTP, through the service layer the API delegates to.
#[tokio::test]
async fn the_service_layer_works_without_http() {
    let Some(h) = start().await else { return };
    let postgres = h.broker.postgres();
    let (instance, binding) = (new_id(), new_id());
    let request = Provision {
        service_id: SERVICE_ID.into(),
        plan_id: PLAN_ID.into(),
        organization_guid: "org".into(),
        space_guid: "space".into(),
    };
    assert_eq!(
        postgres.provision(&instance, &request).await.unwrap(),
        Provisioned::Created
    );
    assert_eq!(
        postgres.provision(&instance, &request).await.unwrap(),
        Provisioned::Exists
    );
    let bind = Bind {
        service_id: SERVICE_ID.into(),
        plan_id: PLAN_ID.into(),
        app_guid: None,
    };
    let Bound::Created(credentials) = postgres.bind(&instance, &binding, &bind).await.unwrap()
    else {
        panic!("not created");
    };
    assert!(!format!("{credentials:?}").contains(&credentials.password));
    assert_eq!(
        postgres.binding(&instance, &binding).await.unwrap(),
        Some(credentials)
    );
    assert_eq!(
        postgres.unbind(&instance, &binding).await.unwrap(),
        Deleted::Deleted
    );
    assert_eq!(
        postgres.deprovision(&instance).await.unwrap(),
        Deleted::Deleted
    );
    assert_eq!(
        postgres.deprovision(&instance).await.unwrap(),
        Deleted::Gone
    );
    assert_eq!(postgres.instance(&instance).await.unwrap(), None);
}
