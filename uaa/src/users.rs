//! UAA's user store (origin `uaa`): users with argon2 password hashes, their SCIM
//! attributes and the scopes (group memberships) their tokens may carry, plus the
//! failed logins the lockout policy counts, in SQLite or PostgreSQL.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use sqlx::{AnyPool, Row as _};

use crate::UaaError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) password_hash: String,
    pub(crate) email: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) given_name: String,
    pub(crate) family_name: String,
    pub(crate) active: bool,
    /// SCIM `meta.version`, bumped on every update.
    pub(crate) version: i64,
    pub(crate) created_at: i64,
    pub(crate) last_modified: i64,
    pub(crate) password_last_modified: i64,
}

impl User {
    /// A new active user of origin `uaa`, created now.
    pub(crate) fn new(
        username: &str,
        password_hash: String,
        email: &str,
        scopes: Vec<String>,
    ) -> User {
        let now = unix_now();
        User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_string(),
            password_hash,
            email: email.to_string(),
            scopes,
            given_name: String::new(),
            family_name: String::new(),
            active: true,
            version: 0,
            created_at: now,
            last_modified: now,
            password_last_modified: now,
        }
    }
}

const MIGRATIONS: &[wf_db::EmbeddedMigration] = wf_db::embed_migrations!(
    1 => "0001_initial",
    2 => "0002_clients",
    3 => "0003_authorization_codes"
);

pub(crate) async fn connect(database_url: &str) -> Result<AnyPool, UaaError> {
    wf_db::open(database_url, MIGRATIONS)
        .await
        .map_err(|e| UaaError::Database(e.to_string()))
}

pub(crate) fn db_error(e: sqlx::Error) -> UaaError {
    UaaError::Database(e.to_string())
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, UaaError> {
    let scopes: String = row.try_get("scopes").map_err(db_error)?;
    Ok(User {
        id: row.try_get("id").map_err(db_error)?,
        username: row.try_get("username").map_err(db_error)?,
        password_hash: row.try_get("password_hash").map_err(db_error)?,
        email: row.try_get("email").map_err(db_error)?,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        given_name: row.try_get("given_name").map_err(db_error)?,
        family_name: row.try_get("family_name").map_err(db_error)?,
        active: row.try_get::<i64, _>("active").map_err(db_error)? != 0,
        version: row.try_get("version").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        last_modified: row.try_get("last_modified").map_err(db_error)?,
        password_last_modified: row.try_get("password_last_modified").map_err(db_error)?,
    })
}

const USER_COLUMNS: &str = "id, username, password_hash, email, scopes, given_name, family_name, \
     active, version, created_at, last_modified, password_last_modified";

pub(crate) async fn find_by_username(
    pool: &AnyPool,
    username: &str,
) -> Result<Option<User>, UaaError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
    let row = sqlx::query(&sql)
        .bind(username.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(user_from_row).transpose()
}

pub(crate) async fn find_by_id(pool: &AnyPool, id: &str) -> Result<Option<User>, UaaError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.to_string())
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
    row.as_ref().map(user_from_row).transpose()
}

/// All users, oldest first (SCIM lists filter and page them in memory).
pub(crate) async fn list(pool: &AnyPool) -> Result<Vec<User>, UaaError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, username");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(db_error)?;
    rows.iter().map(user_from_row).collect()
}

/// Inserts `user`; `Ok(false)` when the username is taken.
pub(crate) async fn insert(pool: &AnyPool, user: &User) -> Result<bool, UaaError> {
    let result = sqlx::query(
        "INSERT INTO users (id, username, password_hash, email, scopes, origin, created_at,
             given_name, family_name, active, version, last_modified, password_last_modified)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(user.id.clone())
    .bind(user.username.clone())
    .bind(user.password_hash.clone())
    .bind(user.email.clone())
    .bind(user.scopes.join(" "))
    .bind("uaa".to_string())
    .bind(user.created_at)
    .bind(user.given_name.clone())
    .bind(user.family_name.clone())
    .bind(i64::from(user.active))
    .bind(user.version)
    .bind(user.last_modified)
    .bind(user.password_last_modified)
    .execute(pool)
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(db_error(e)),
    }
}

/// Writes every attribute of `user` (found by id) and bumps its version, as long as the
/// stored version is still `user.version`. `Ok(false)`: the username is taken, or the
/// user changed or vanished meanwhile (the caller tells which by reading it again).
pub(crate) async fn update(pool: &AnyPool, user: &User) -> Result<bool, UaaError> {
    let result = sqlx::query(
        "UPDATE users SET username = $1, password_hash = $2, email = $3, scopes = $4,
             given_name = $5, family_name = $6, active = $7, version = version + 1,
             last_modified = $8, password_last_modified = $9
         WHERE id = $10 AND version = $11",
    )
    .bind(user.username.clone())
    .bind(user.password_hash.clone())
    .bind(user.email.clone())
    .bind(user.scopes.join(" "))
    .bind(user.given_name.clone())
    .bind(user.family_name.clone())
    .bind(i64::from(user.active))
    .bind(unix_now())
    .bind(user.password_last_modified)
    .bind(user.id.clone())
    .bind(user.version)
    .execute(pool)
    .await;
    match result {
        Ok(r) => Ok(r.rows_affected() == 1),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(db_error(e)),
    }
}

/// Deletes the user and its failed logins; `Ok(false)` when there was none.
pub(crate) async fn delete(pool: &AnyPool, id: &str) -> Result<bool, UaaError> {
    let mut tx = wf_db::begin_write(pool).await.map_err(db_error)?;
    sqlx::query("DELETE FROM failed_logins WHERE user_id = $1")
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
    tx.commit().await.map_err(db_error)?;
    Ok(deleted > 0)
}

/// Records a failed login of `user_id` at `at` (unix seconds).
pub(crate) async fn record_failed_login(
    pool: &AnyPool,
    user_id: &str,
    at: i64,
) -> Result<(), UaaError> {
    sqlx::query("INSERT INTO failed_logins (user_id, at) VALUES ($1, $2)")
        .bind(user_id.to_string())
        .bind(at)
        .execute(pool)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// How many failed logins `user_id` had after `since`, and when the latest was.
pub(crate) async fn failed_logins_since(
    pool: &AnyPool,
    user_id: &str,
    since: i64,
) -> Result<(i64, Option<i64>), UaaError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MAX(at) AS latest FROM failed_logins WHERE user_id = $1 AND at > $2",
    )
    .bind(user_id.to_string())
    .bind(since)
    .fetch_one(pool)
    .await
    .map_err(db_error)?;
    let n: i64 = row.try_get("n").map_err(db_error)?;
    let latest: Option<i64> = row.try_get("latest").map_err(db_error)?;
    Ok((n, latest))
}

/// Forgets the failed logins of `user_id` (after a successful one, as UAA does).
pub(crate) async fn clear_failed_logins(pool: &AnyPool, user_id: &str) -> Result<(), UaaError> {
    sqlx::query("DELETE FROM failed_logins WHERE user_id = $1")
        .bind(user_id.to_string())
        .execute(pool)
        .await
        .map_err(db_error)?;
    Ok(())
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// An argon2id PHC string for `password` (on the blocking pool: it is slow on purpose).
pub(crate) async fn hash_password(password: &str) -> Result<String, UaaError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| UaaError::PasswordHash(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| UaaError::PasswordHash(e.to_string()))
    })
    .await
    .map_err(|e| UaaError::PasswordHash(format!("hashing task failed: {e}")))?
}

/// Whether `password` matches `hash`; a malformed hash matches nothing.
pub(crate) async fn verify_password(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_round_trip_and_names_are_unique() {
        for db in wf_db::testing::databases().await {
            users_round_trip_on(db.url()).await;
        }
    }

    async fn users_round_trip_on(database_url: &str) {
        let pool = connect(database_url).await.unwrap();
        let user = User {
            id: "u1".into(),
            ..User::new(
                "alice",
                hash_password("pw").await.unwrap(),
                "alice@example.com",
                vec!["openid".into(), "uaa.user".into()],
            )
        };
        assert!(insert(&pool, &user).await.unwrap());
        assert!(!insert(
            &pool,
            &User {
                id: "u2".into(),
                ..user.clone()
            }
        )
        .await
        .unwrap());
        let found = find_by_username(&pool, "alice").await.unwrap().unwrap();
        assert_eq!(found, user);
        assert_eq!(find_by_id(&pool, "u1").await.unwrap(), Some(user.clone()));
        assert!(find_by_username(&pool, "bob").await.unwrap().is_none());
        assert!(verify_password("pw", &found.password_hash).await);
        assert!(!verify_password("nope", &found.password_hash).await);
        assert!(!verify_password("pw", "garbage").await);

        // Updates check the version and bump it; names stay unique.
        let mut changed = found.clone();
        changed.email = "a@example.org".into();
        changed.active = false;
        assert!(update(&pool, &changed).await.unwrap());
        assert!(!update(&pool, &changed).await.unwrap(), "stale version");
        let stored = find_by_id(&pool, "u1").await.unwrap().unwrap();
        assert_eq!((stored.version, stored.active), (1, false));
        assert_eq!(stored.email, "a@example.org");
        let bob = User::new("bob", "h".into(), "b", vec![]);
        assert!(insert(&pool, &bob).await.unwrap());
        let mut clash = bob.clone();
        clash.username = "alice".into();
        assert!(!update(&pool, &clash).await.unwrap());
        assert_eq!(list(&pool).await.unwrap().len(), 2);

        // Failed logins are counted in a window and cleared.
        for at in [100, 200, 300] {
            record_failed_login(&pool, "u1", at).await.unwrap();
        }
        assert_eq!(
            failed_logins_since(&pool, "u1", 150).await.unwrap(),
            (2, Some(300))
        );
        assert_eq!(
            failed_logins_since(&pool, "u2", 0).await.unwrap(),
            (0, None)
        );
        clear_failed_logins(&pool, "u1").await.unwrap();
        assert_eq!(failed_logins_since(&pool, "u1", 0).await.unwrap().0, 0);

        assert!(delete(&pool, "u1").await.unwrap());
        assert!(!delete(&pool, "u1").await.unwrap());
        assert!(find_by_id(&pool, "u1").await.unwrap().is_none());
    }
}
