//! Who may read which app's logs from the log cache: a valid token may read the logs
//! of an app in a space its user can access; admins read everything.

use std::sync::Arc;

use futures::future::BoxFuture;
use wf_loggregator::{AccessDecision, SourceAuthorizer};

use crate::auth::User;
use crate::db::App;
use crate::Controller;

pub struct LogAccess {
    controller: Arc<Controller>,
}

impl LogAccess {
    pub fn new(controller: Arc<Controller>) -> LogAccess {
        LogAccess { controller }
    }

    async fn decide(&self, authorization: Option<&str>, source_id: &str) -> AccessDecision {
        let Ok(user) = User::from_header(&self.controller.verifier, authorization) else {
            return AccessDecision::Unauthenticated;
        };
        if user.claims.is_admin() {
            return AccessDecision::Allowed;
        }
        match self.controller.db.get::<App>(source_id).await {
            Ok(Some(app)) if user.can_access_space(&app.space_guid) => AccessDecision::Allowed,
            Ok(_) => AccessDecision::Denied,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check log access");
                AccessDecision::Denied
            }
        }
    }
}

impl SourceAuthorizer for LogAccess {
    fn can_read<'a>(
        &'a self,
        authorization: Option<&'a str>,
        source_id: &'a str,
    ) -> BoxFuture<'a, AccessDecision> {
        Box::pin(self.decide(authorization, source_id))
    }
}
