//! UAA's user store (origin `uaa`): users with argon2 password hashes and the scopes
//! (group memberships) their tokens may carry, in SQLite or PostgreSQL.

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
}

const MIGRATIONS: &[wf_db::EmbeddedMigration] = wf_db::embed_migrations!(1 => "0001_initial");

pub(crate) async fn connect(database_url: &str) -> Result<AnyPool, UaaError> {
    wf_db::open(database_url, MIGRATIONS)
        .await
        .map_err(|e| UaaError::Database(e.to_string()))
}

fn db_error(e: sqlx::Error) -> UaaError {
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
    })
}

const USER_COLUMNS: &str = "id, username, password_hash, email, scopes";

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

/// Inserts `user`; `Ok(false)` when the username is taken.
pub(crate) async fn insert(pool: &AnyPool, user: &User) -> Result<bool, UaaError> {
    let result = sqlx::query(
        "INSERT INTO users (id, username, password_hash, email, scopes, origin, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user.id.clone())
    .bind(user.username.clone())
    .bind(user.password_hash.clone())
    .bind(user.email.clone())
    .bind(user.scopes.join(" "))
    .bind("uaa".to_string())
    .bind(unix_now())
    .execute(pool)
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(db_error(e)),
    }
}

pub(crate) async fn update_credentials(pool: &AnyPool, user: &User) -> Result<(), UaaError> {
    sqlx::query("UPDATE users SET password_hash = $1, scopes = $2 WHERE id = $3")
        .bind(user.password_hash.clone())
        .bind(user.scopes.join(" "))
        .bind(user.id.clone())
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
        let pool = connect("sqlite::memory:").await.unwrap();
        let user = User {
            id: "u1".into(),
            username: "alice".into(),
            password_hash: hash_password("pw").await.unwrap(),
            email: "alice@example.com".into(),
            scopes: vec!["openid".into(), "uaa.user".into()],
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
    }
}
