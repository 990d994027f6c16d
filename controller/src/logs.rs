//! Who may read which app's logs from the log cache: a valid token may read the logs
//! of an app in a space its user can see (any role there); admins and global auditors
//! read everything.

use std::sync::Arc;

use futures::future::BoxFuture;
use wf_loggregator::{AccessDecision, SourceAuthorizer};

use crate::auth::User;
use crate::db::App;
use crate::error::ApiError;
use crate::Controller;

pub struct LogAccess {
    controller: Arc<Controller>,
}

impl LogAccess {
    pub fn new(controller: Arc<Controller>) -> LogAccess {
        LogAccess { controller }
    }

    async fn decide(&self, authorization: Option<&str>, source_id: &str) -> AccessDecision {
        let user = match User::authenticate(&self.controller, authorization).await {
            Ok(user) => user,
            Err(ApiError::Internal(e)) => {
                tracing::warn!(error = %e, "cannot check log access");
                return AccessDecision::Denied;
            }
            Err(_) => return AccessDecision::Unauthenticated,
        };
        if user.sees_everything() {
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
