//! CF's role matrix, generated: every endpoint family below is called by a user of
//! every role, each in a world of its own (org, space, app, route) so that no call sees
//! another's effects. The expected outcome is derived, not written per cell: a role in
//! the endpoint's permitted list (cloud_controller_ng's, from the V3 docs) succeeds; a
//! role that can see the resource but is not permitted gets 403 CF-NotAuthorized; a
//! role that cannot see it gets 404 (or 422 when creating inside it, as CF answers).
//! Lists answer 200 to everyone and include the world's resource only for those who
//! can see it. The whole table is printed; every mismatch is reported at once.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use wf_db::testing::Backend;

use common::Api;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Admin,
    AdminReadOnly,
    GlobalAuditor,
    OrgManager,
    OrgAuditor,
    OrgBillingManager,
    OrgUser,
    SpaceManager,
    SpaceDeveloper,
    SpaceAuditor,
    SpaceSupporter,
    NoRole,
}

use Role::*;

const ROLES: &[Role] = &[
    Admin,
    AdminReadOnly,
    GlobalAuditor,
    OrgManager,
    OrgAuditor,
    OrgBillingManager,
    OrgUser,
    SpaceManager,
    SpaceDeveloper,
    SpaceAuditor,
    SpaceSupporter,
    NoRole,
];

impl Role {
    fn short(self) -> &'static str {
        match self {
            Admin => "admin",
            AdminReadOnly => "admin_ro",
            GlobalAuditor => "g_auditor",
            OrgManager => "org_mgr",
            OrgAuditor => "org_aud",
            OrgBillingManager => "org_bill",
            OrgUser => "org_user",
            SpaceManager => "sp_mgr",
            SpaceDeveloper => "sp_dev",
            SpaceAuditor => "sp_aud",
            SpaceSupporter => "sp_sup",
            NoRole => "none",
        }
    }

    /// The CC role types this role is made of in a world (space roles need an org
    /// role first, as in CF).
    fn cc_roles(self) -> &'static [&'static str] {
        match self {
            OrgManager => &["organization_manager"],
            OrgAuditor => &["organization_auditor"],
            OrgBillingManager => &["organization_billing_manager"],
            OrgUser => &["organization_user"],
            SpaceManager => &["organization_user", "space_manager"],
            SpaceDeveloper => &["organization_user", "space_developer"],
            SpaceAuditor => &["organization_user", "space_auditor"],
            SpaceSupporter => &["organization_user", "space_supporter"],
            Admin | AdminReadOnly | GlobalAuditor | NoRole => &[],
        }
    }

    /// The UAA group that makes this role, for the global ones.
    fn uaa_group(self) -> Option<&'static str> {
        match self {
            AdminReadOnly => Some("cloud_controller.admin_read_only"),
            GlobalAuditor => Some("cloud_controller.global_auditor"),
            _ => None,
        }
    }

    fn sees(self, scope: Scope) -> bool {
        let global = matches!(self, Admin | AdminReadOnly | GlobalAuditor);
        match scope {
            Scope::Global => true,
            Scope::Org => global || !matches!(self, NoRole),
            Scope::Space => {
                global
                    || matches!(
                        self,
                        OrgManager | SpaceManager | SpaceDeveloper | SpaceAuditor | SpaceSupporter
                    )
            }
        }
    }
}

/// What an endpoint acts on, which decides who can see it.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Global,
    Org,
    Space,
}

/// Roles that read everything in a space (CF's read list for apps, processes, routes).
const SPACE_READERS: &[Role] = &[
    Admin,
    AdminReadOnly,
    GlobalAuditor,
    OrgManager,
    SpaceManager,
    SpaceDeveloper,
    SpaceAuditor,
    SpaceSupporter,
];
const DEVELOPERS: &[Role] = &[Admin, SpaceDeveloper];
const OPERATORS: &[Role] = &[Admin, SpaceDeveloper, SpaceSupporter];
const SECRET_READERS: &[Role] = &[Admin, AdminReadOnly, SpaceDeveloper];

/// One endpoint family: its request and the roles CF permits.
struct Case {
    name: &'static str,
    scope: Scope,
    permitted: &'static [Role],
    /// What a role that cannot see the scope gets: 404, or 422 for creates inside it.
    hidden: u16,
    /// A list: 200 for everyone, the world's resource listed for those who see it.
    list: bool,
    /// The status of a permitted call when not 2xx (an action refused for other
    /// reasons after authorization, e.g. a task on an app without a droplet).
    permitted_status: Option<u16>,
    request: fn(&World) -> (Method, String, Option<Value>),
}

const fn case(
    name: &'static str,
    scope: Scope,
    permitted: &'static [Role],
    request: fn(&World) -> (Method, String, Option<Value>),
) -> Case {
    Case {
        name,
        scope,
        permitted,
        hidden: 404,
        list: false,
        permitted_status: None,
        request,
    }
}

impl Case {
    const fn creating(mut self) -> Case {
        self.hidden = 422;
        self
    }
    const fn listing(mut self) -> Case {
        self.list = true;
        self
    }
    const fn permitted_status(mut self, status: u16) -> Case {
        self.permitted_status = Some(status);
        self
    }
}

/// A fresh org with a space, an app (with its web process) and a route, and the
/// acting user's roles in them.
struct World {
    org: String,
    org_name: String,
    space: String,
    space_name: String,
    app: String,
    process: String,
    route: String,
    /// An admin buildpack of this world's own.
    buildpack: String,
    /// A user-provided service instance in the space, bound to the app, and a route
    /// service bound to the route.
    service_instance: String,
    binding: String,
    route_binding: String,
    /// A user with a developer's role only, for role creation.
    other_user: String,
}

fn get(path: String) -> (Method, String, Option<Value>) {
    (Method::GET, path, None)
}

const CASES: &[Case] = &[
    // Organizations.
    case(
        "GET org",
        Scope::Org,
        &[
            Admin,
            AdminReadOnly,
            GlobalAuditor,
            OrgManager,
            OrgAuditor,
            OrgBillingManager,
            OrgUser,
            SpaceManager,
            SpaceDeveloper,
            SpaceAuditor,
            SpaceSupporter,
        ],
        |w| get(format!("/v3/organizations/{}", w.org)),
    ),
    case("list orgs", Scope::Org, &[], |w| {
        get(format!("/v3/organizations?names={}", w.org_name))
    })
    .listing(),
    case("POST org", Scope::Global, &[Admin], |w| {
        (
            Method::POST,
            "/v3/organizations".into(),
            Some(json!({"name": format!("{}-new", w.org_name)})),
        )
    }),
    case("PATCH org", Scope::Org, &[Admin, OrgManager], |w| {
        (
            Method::PATCH,
            format!("/v3/organizations/{}", w.org),
            Some(json!({"name": w.org_name})),
        )
    }),
    case("DELETE org", Scope::Org, &[Admin], |w| {
        (Method::DELETE, format!("/v3/organizations/{}", w.org), None)
    }),
    // Isolation segments: admins create them; org managers pick the org's default and
    // its spaces' segments (`null`, the shared cells, is always allowed).
    case("POST isolation segment", Scope::Global, &[Admin], |w| {
        (
            Method::POST,
            "/v3/isolation_segments".into(),
            Some(json!({"name": format!("{}-segment", w.org_name)})),
        )
    }),
    case(
        "GET org default segment",
        Scope::Org,
        &[
            Admin,
            AdminReadOnly,
            GlobalAuditor,
            OrgManager,
            OrgAuditor,
            OrgBillingManager,
            OrgUser,
            SpaceManager,
            SpaceDeveloper,
            SpaceAuditor,
            SpaceSupporter,
        ],
        |w| {
            get(format!(
                "/v3/organizations/{}/relationships/default_isolation_segment",
                w.org
            ))
        },
    ),
    case(
        "PATCH org default segment",
        Scope::Org,
        &[Admin, OrgManager],
        |w| {
            (
                Method::PATCH,
                format!(
                    "/v3/organizations/{}/relationships/default_isolation_segment",
                    w.org
                ),
                Some(json!({"data": null})),
            )
        },
    ),
    case("GET space segment", Scope::Space, SPACE_READERS, |w| {
        get(format!(
            "/v3/spaces/{}/relationships/isolation_segment",
            w.space
        ))
    }),
    case(
        "PATCH space segment",
        Scope::Space,
        &[Admin, OrgManager],
        |w| {
            (
                Method::PATCH,
                format!("/v3/spaces/{}/relationships/isolation_segment", w.space),
                Some(json!({"data": null})),
            )
        },
    ),
    // Spaces.
    case("GET space", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/spaces/{}", w.space))
    }),
    case("list spaces", Scope::Space, &[], |w| {
        get(format!("/v3/spaces?names={}", w.space_name))
    })
    .listing(),
    case("POST space", Scope::Org, &[Admin, OrgManager], |w| {
        (
            Method::POST,
            "/v3/spaces".into(),
            Some(json!({
                "name": "another",
                "relationships": {"organization": {"data": {"guid": w.org}}},
            })),
        )
    })
    .creating(),
    case(
        "PATCH space",
        Scope::Space,
        &[Admin, OrgManager, SpaceManager],
        |w| {
            (
                Method::PATCH,
                format!("/v3/spaces/{}", w.space),
                Some(json!({"name": w.space_name})),
            )
        },
    ),
    case("DELETE space", Scope::Space, &[Admin, OrgManager], |w| {
        (Method::DELETE, format!("/v3/spaces/{}", w.space), None)
    }),
    // Apps.
    case("GET app", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}", w.app))
    }),
    case("list apps", Scope::Space, &[], |w| {
        get(format!("/v3/apps?space_guids={}", w.space))
    })
    .listing(),
    case("POST app", Scope::Space, DEVELOPERS, |w| {
        (
            Method::POST,
            "/v3/apps".into(),
            Some(json!({
                "name": "another",
                "relationships": {"space": {"data": {"guid": w.space}}},
            })),
        )
    })
    .creating(),
    case("PATCH app", Scope::Space, OPERATORS, |w| {
        (
            Method::PATCH,
            format!("/v3/apps/{}", w.app),
            Some(json!({"name": "renamed"})),
        )
    }),
    case("DELETE app", Scope::Space, DEVELOPERS, |w| {
        (Method::DELETE, format!("/v3/apps/{}", w.app), None)
    }),
    case("restart app", Scope::Space, OPERATORS, |w| {
        (
            Method::POST,
            format!("/v3/apps/{}/actions/restart", w.app),
            None,
        )
    })
    // Authorized, then refused: the app has no droplet.
    .permitted_status(422),
    case("set droplet", Scope::Space, OPERATORS, |w| {
        (
            Method::PATCH,
            format!("/v3/apps/{}/relationships/current_droplet", w.app),
            Some(json!({"data": {"guid": "no-such-droplet"}})),
        )
    })
    .permitted_status(422),
    case("app processes", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}/processes", w.app))
    }),
    case("app packages", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}/packages", w.app))
    }),
    case("app builds", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}/builds", w.app))
    }),
    case("app droplets", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}/droplets", w.app))
    }),
    case("app tasks", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}/tasks", w.app))
    }),
    case("app routes", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}/routes", w.app))
    }),
    case("app revisions", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}/revisions", w.app))
    }),
    case("deployed revisions", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/apps/{}/revisions/deployed", w.app))
    }),
    case("stop app", Scope::Space, OPERATORS, |w| {
        (
            Method::POST,
            format!("/v3/apps/{}/actions/stop", w.app),
            None,
        )
    }),
    case("GET app env", Scope::Space, SECRET_READERS, |w| {
        get(format!("/v3/apps/{}/env", w.app))
    }),
    case("GET env vars", Scope::Space, SECRET_READERS, |w| {
        get(format!("/v3/apps/{}/environment_variables", w.app))
    }),
    case("PATCH env vars", Scope::Space, DEVELOPERS, |w| {
        (
            Method::PATCH,
            format!("/v3/apps/{}/environment_variables", w.app),
            Some(json!({"var": {"A": "1"}})),
        )
    }),
    // Processes.
    case("GET process", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/processes/{}", w.process))
    }),
    case("process stats", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/processes/{}/stats", w.process))
    }),
    case("scale process", Scope::Space, OPERATORS, |w| {
        (
            Method::POST,
            format!("/v3/processes/{}/actions/scale", w.process),
            Some(json!({"instances": 2})),
        )
    }),
    case("PATCH process", Scope::Space, OPERATORS, |w| {
        (
            Method::PATCH,
            format!("/v3/processes/{}", w.process),
            Some(json!({"command": "serve"})),
        )
    }),
    // Packages and tasks (developers only).
    case("POST package", Scope::Space, DEVELOPERS, |w| {
        (
            Method::POST,
            "/v3/packages".into(),
            Some(json!({
                "type": "bits",
                "relationships": {"app": {"data": {"guid": w.app}}},
            })),
        )
    })
    .creating(),
    case("POST task", Scope::Space, DEVELOPERS, |w| {
        (
            Method::POST,
            format!("/v3/apps/{}/tasks", w.app),
            Some(json!({"command": "run"})),
        )
    })
    // Authorized, then refused: the app has no droplet.
    .permitted_status(422),
    // Routes.
    case("GET route", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/routes/{}", w.route))
    }),
    case("list routes", Scope::Space, &[], |w| {
        get(format!("/v3/routes?space_guids={}", w.space))
    })
    .listing(),
    case("POST route", Scope::Space, OPERATORS, |w| {
        (
            Method::POST,
            "/v3/routes".into(),
            Some(json!({
                "host": format!("other-{}", w.space_name),
                "relationships": {
                    "space": {"data": {"guid": w.space}},
                    "domain": {"data": {"guid": "apps-domain"}},
                },
            })),
        )
    })
    .creating(),
    case("DELETE route", Scope::Space, OPERATORS, |w| {
        (Method::DELETE, format!("/v3/routes/{}", w.route), None)
    }),
    case("map route", Scope::Space, OPERATORS, |w| {
        (
            Method::POST,
            format!("/v3/routes/{}/destinations", w.route),
            Some(json!({
                "destinations": [{"app": {"guid": w.app}}],
            })),
        )
    }),
    case("route dests", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/routes/{}/destinations", w.route))
    }),
    // Roles.
    case(
        "POST space role",
        Scope::Space,
        &[Admin, OrgManager, SpaceManager],
        |w| {
            (
                Method::POST,
                "/v3/roles".into(),
                Some(json!({
                    "type": "space_auditor",
                    "relationships": {
                        "user": {"data": {"guid": w.other_user}},
                        "space": {"data": {"guid": w.space}},
                    },
                })),
            )
        },
    )
    .creating(),
    case("list space roles", Scope::Space, &[], |w| {
        get(format!("/v3/roles?space_guids={}", w.space))
    })
    .listing(),
    // Service instances and bindings: space readers see them, developers change them,
    // secret readers see credentials.
    case("GET svc instance", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/service_instances/{}", w.service_instance))
    }),
    case("list svc instances", Scope::Space, &[], |w| {
        get(format!("/v3/service_instances?space_guids={}", w.space))
    })
    .listing(),
    case("svc credentials", Scope::Space, SECRET_READERS, |w| {
        get(format!(
            "/v3/service_instances/{}/credentials",
            w.service_instance
        ))
    }),
    case("POST svc instance", Scope::Space, DEVELOPERS, |w| {
        (
            Method::POST,
            "/v3/service_instances".into(),
            Some(json!({
                "type": "user-provided",
                "name": "another",
                "relationships": {"space": {"data": {"guid": w.space}}},
            })),
        )
    })
    .creating(),
    case("PATCH svc instance", Scope::Space, DEVELOPERS, |w| {
        (
            Method::PATCH,
            format!("/v3/service_instances/{}", w.service_instance),
            Some(json!({"tags": ["t"]})),
        )
    }),
    case("DELETE svc instance", Scope::Space, DEVELOPERS, |w| {
        (
            Method::DELETE,
            format!("/v3/service_instances/{}", w.service_instance),
            None,
        )
    }),
    case("GET binding", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/service_credential_bindings/{}", w.binding))
    }),
    case("binding details", Scope::Space, SECRET_READERS, |w| {
        get(format!(
            "/v3/service_credential_bindings/{}/details",
            w.binding
        ))
    }),
    case("DELETE binding", Scope::Space, DEVELOPERS, |w| {
        (
            Method::DELETE,
            format!("/v3/service_credential_bindings/{}", w.binding),
            None,
        )
    }),
    case("GET route binding", Scope::Space, SPACE_READERS, |w| {
        get(format!("/v3/service_route_bindings/{}", w.route_binding))
    }),
    case("list route bindings", Scope::Space, &[], |w| {
        get(format!(
            "/v3/service_route_bindings?service_instance_guids={}",
            w.service_instance
        ))
    })
    .listing(),
    case("PATCH route binding", Scope::Space, DEVELOPERS, |w| {
        (
            Method::PATCH,
            format!("/v3/service_route_bindings/{}", w.route_binding),
            Some(json!({"metadata": {"labels": {"k": "v"}}})),
        )
    }),
    case("DELETE route binding", Scope::Space, DEVELOPERS, |w| {
        (
            Method::DELETE,
            format!("/v3/service_route_bindings/{}", w.route_binding),
            None,
        )
    }),
    // Buildpacks: everyone signed in reads, admins write.
    case("list buildpacks", Scope::Global, ROLES, |_| {
        get("/v3/buildpacks".into())
    }),
    case("GET buildpack", Scope::Global, ROLES, |w| {
        get(format!("/v3/buildpacks/{}", w.buildpack))
    }),
    case("POST buildpack", Scope::Global, &[Admin], |w| {
        (
            Method::POST,
            "/v3/buildpacks".into(),
            Some(json!({"name": format!("new-{}", w.org_name)})),
        )
    }),
    case("PATCH buildpack", Scope::Global, &[Admin], |w| {
        (
            Method::PATCH,
            format!("/v3/buildpacks/{}", w.buildpack),
            Some(json!({"enabled": false})),
        )
    }),
    case("DELETE buildpack", Scope::Global, &[Admin], |w| {
        (
            Method::DELETE,
            format!("/v3/buildpacks/{}", w.buildpack),
            None,
        )
    }),
];

/// The users, one per role, with their `bearer` tokens.
struct Users {
    by_role: BTreeMap<Role, (String, String)>,
    /// A user who only ever gets org_user roles, for role creation.
    other: String,
}

async fn make_users(api: &Api) -> Users {
    let mut by_role = BTreeMap::new();
    for &role in ROLES {
        let (id, token) = if role == Admin {
            (String::new(), api.token.clone())
        } else {
            let name = format!("user-{}", role.short());
            let id = api
                .uaa
                .create_user(&name, "a-password-1", &format!("{name}@example.com"))
                .await
                .unwrap();
            if let Some(group) = role.uaa_group() {
                let filter = format!("displayName eq \"{group}\"");
                let groups = api.uaa.list_groups(Some(&filter)).await.unwrap();
                api.uaa.add_member(&groups[0].id, &id).await.unwrap();
            }
            let token = api
                .uaa
                .password_grant("cf", &name, "a-password-1", None)
                .await
                .unwrap()
                .access_token;
            (id, format!("bearer {token}"))
        };
        by_role.insert(role, (id, token));
    }
    let other = api
        .uaa
        .create_user("user-other", "a-password-1", "other@example.com")
        .await
        .unwrap();
    Users { by_role, other }
}

/// A new world for `role`'s user, made by the admin.
async fn make_world(api: &Api, users: &Users, role: Role, n: usize, domain: &str) -> World {
    let org_name = format!("org-{n}");
    let org = api
        .post("/v3/organizations", json!({"name": org_name}))
        .await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let space_name = format!("space-{n}");
    let space = api
        .post(
            "/v3/spaces",
            json!({"name": space_name, "relationships": {"organization": {"data": {"guid": org}}}}),
        )
        .await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let app = api
        .post(
            "/v3/apps",
            json!({"name": "app", "relationships": {"space": {"data": {"guid": space}}}}),
        )
        .await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let process = api.get(&format!("/v3/apps/{app}/processes/web")).await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let route = api
        .post(
            "/v3/routes",
            json!({
                "host": format!("host-{n}"),
                "relationships": {
                    "space": {"data": {"guid": space}},
                    "domain": {"data": {"guid": domain}},
                },
            }),
        )
        .await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let buildpack = api
        .post("/v3/buildpacks", json!({"name": format!("bp-{n}")}))
        .await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let service_instance = api
        .post(
            "/v3/service_instances",
            json!({
                "type": "user-provided",
                "name": "ups",
                "credentials": {"password": "secret"},
                "route_service_url": "https://rs.example",
                "relationships": {"space": {"data": {"guid": space}}},
            }),
        )
        .await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let binding = api
        .post(
            "/v3/service_credential_bindings",
            json!({
                "type": "app",
                "relationships": {
                    "app": {"data": {"guid": app}},
                    "service_instance": {"data": {"guid": service_instance}},
                },
            }),
        )
        .await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let route_binding = api
        .post(
            "/v3/service_route_bindings",
            json!({"relationships": {
                "route": {"data": {"guid": route}},
                "service_instance": {"data": {"guid": service_instance}},
            }}),
        )
        .await["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let (user, _) = &users.by_role[&role];
    for kind in role.cc_roles() {
        let target = if kind.starts_with("organization") {
            json!({"organization": {"data": {"guid": org}}})
        } else {
            json!({"space": {"data": {"guid": space}}})
        };
        let mut relationships = target;
        relationships["user"] = json!({"data": {"guid": user}});
        api.post(
            "/v3/roles",
            json!({"type": kind, "relationships": relationships}),
        )
        .await;
    }
    // Someone else in the space (so that every reader lists a role there), whom space
    // managers may give another space role.
    let other_user = &users.other;
    for (kind, target) in [
        ("organization_user", "organization"),
        ("space_developer", "space"),
    ] {
        let guid = if target == "space" { &space } else { &org };
        api.post(
            "/v3/roles",
            json!({
                "type": kind,
                "relationships": {
                    "user": {"data": {"guid": other_user}},
                    target: {"data": {"guid": guid}},
                },
            }),
        )
        .await;
    }
    World {
        org,
        org_name,
        space,
        space_name,
        app,
        process,
        route,
        buildpack,
        service_instance,
        binding,
        route_binding,
        other_user: other_user.clone(),
    }
}

/// Whether the world's resource is in a list response.
fn lists(body: &Value, world: &World) -> bool {
    let wanted = [
        &world.org,
        &world.space,
        &world.app,
        &world.route,
        &world.route_binding,
    ];
    body["resources"].as_array().is_some_and(|items| {
        items.iter().any(|item| {
            let guid = item["guid"].as_str().unwrap_or_default();
            let space = item
                .pointer("/relationships/space/data/guid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            wanted.iter().any(|w| *w == guid) || space == world.space
        })
    })
}

#[tokio::test]
async fn every_role_against_every_endpoint_family() {
    let api = common::start(Backend::Sqlite).await;
    let users = make_users(&api).await;
    let domain = api.get("/v3/domains").await["resources"][0]["guid"]
        .as_str()
        .unwrap()
        .to_string();

    let mut table = String::new();
    let _ = write!(table, "{:<18}", "");
    for role in ROLES {
        let _ = write!(table, "{:>10}", role.short());
    }
    table.push('\n');
    let mut mismatches = Vec::new();
    let mut n = 0;
    for case in CASES {
        let _ = write!(table, "{:<18}", case.name);
        for &role in ROLES {
            n += 1;
            let world = make_world(&api, &users, role, n, &domain).await;
            let (method, path, body) = (case.request)(&world);
            let body = body.map(|b| {
                let text = b.to_string().replace("apps-domain", &domain);
                text.into_bytes()
            });
            let (_, token) = &users.by_role[&role];
            let (status, _, response) = api
                .send_as(Some(token), method, &path, None, body.unwrap_or_default())
                .await;
            let sees = role.sees(case.scope);
            let (expected, ok) = if case.list {
                let listed = status == StatusCode::OK && lists(&response, &world);
                let want = if sees { "listed" } else { "unlisted" };
                let got = if status != StatusCode::OK {
                    status.as_str().to_string()
                } else if listed {
                    "listed".into()
                } else {
                    "unlisted".into()
                };
                let _ = write!(table, "{:>10}", got);
                (want.to_string(), got == want)
            } else {
                let _ = write!(table, "{:>10}", status.as_u16());
                if case.permitted.contains(&role) {
                    let ok = match case.permitted_status {
                        Some(s) => status.as_u16() == s,
                        None => status.is_success(),
                    };
                    let want = case
                        .permitted_status
                        .map_or("2xx".to_string(), |s| s.to_string());
                    (want, ok)
                } else if sees {
                    let ok = status == StatusCode::FORBIDDEN
                        && response["errors"][0]["title"] == "CF-NotAuthorized";
                    ("403 CF-NotAuthorized".into(), ok)
                } else {
                    (case.hidden.to_string(), status.as_u16() == case.hidden)
                }
            };
            if !ok {
                mismatches.push(format!(
                    "{} as {:?}: expected {expected}, got {} {response}",
                    case.name, role, status
                ));
            }
        }
        table.push('\n');
    }
    eprintln!("role matrix (status, or whether the world's resource is listed):\n{table}");
    assert!(
        mismatches.is_empty(),
        "{} of {} calls differ from CF's role matrix:\n{}",
        mismatches.len(),
        CASES.len() * ROLES.len(),
        mismatches.join("\n")
    );
}
