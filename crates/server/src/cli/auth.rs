//! `tenure auth|user|role ...`: etcd's authentication and roles from the command line, with
//! etcdctl 3.4's arguments and output. `--user NAME:PASSWORD` authenticates first (as
//! etcdctl's global flag does) and sends the token with the command.

use std::io::BufRead as _;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};

use crate::cli::ClientArgs;
use crate::cli::client::{Authed, with_retries};
use crate::pb::authpb;
use crate::pb::etcdserverpb as pb;
use pb::auth_client::AuthClient;

/// Who runs the command: etcdctl's `--user` and `--password`.
#[derive(Debug, Args, Clone, Default)]
pub struct Credentials {
    /// `NAME` or `NAME:PASSWORD` to authenticate as (etcdctl's `--user`).
    #[arg(long, env = "ETCDCTL_USER")]
    pub user: Option<String>,
    /// The password, when `--user` gives only the name.
    #[arg(long, env = "ETCDCTL_PASSWORD")]
    pub password: Option<String>,
}

/// `tenure auth ...`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Turn authentication on (needs the root user with the root role).
    Enable(AuthConn),
    /// Turn authentication off.
    Disable(AuthConn),
    /// Whether authentication is on, and the auth revision.
    Status(AuthConn),
}

impl Credentials {
    /// The name and password to log in with, if `--user` was given: the password from
    /// `--user NAME:PASSWORD`, else `--password`, else read from stdin (as etcdctl prompts).
    pub fn login(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(user) = &self.user else { return Ok(None) };
        let (name, password) = split_user(user);
        let password = match password.or_else(|| self.password.clone()) {
            Some(p) => p,
            None => read_password()?,
        };
        Ok(Some((name, password)))
    }
}

/// Connection and credentials of an auth command.
#[derive(Debug, Args, Clone)]
pub struct AuthConn {
    /// Connection flags, `--user` and `--password` among them.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tenure user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user: `NAME` (the password is read from stdin) or `NAME:PASSWORD`.
    Add {
        /// `NAME` or `NAME:PASSWORD`.
        #[arg(value_name = "USER")]
        new_user: String,
        /// The user has no password (it can authenticate only by a client certificate).
        #[arg(long)]
        no_password: bool,
        /// The new user's password (instead of `NAME:PASSWORD` or stdin).
        #[arg(long)]
        new_user_password: Option<String>,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// Delete a user.
    Delete {
        /// The user.
        name: String,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// Show a user's roles.
    Get {
        /// The user.
        name: String,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// List the users.
    List(AuthConn),
    /// Change a user's password (read from stdin).
    Passwd {
        /// The user.
        name: String,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// Grant a role to a user.
    GrantRole {
        /// The user.
        name: String,
        /// The role.
        role: String,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// Revoke a role from a user.
    RevokeRole {
        /// The user.
        name: String,
        /// The role.
        role: String,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
}

/// The key range of a permission, etcdctl's way: a key, a key and a range end, `--prefix` or
/// `--from-key`.
#[derive(Debug, Args, Clone)]
pub struct PermRange {
    /// The key.
    pub key: String,
    /// The end of the range (exclusive).
    pub range_end: Option<String>,
    /// The key is a prefix.
    #[arg(long, conflicts_with_all = ["range_end", "from_key"])]
    pub prefix: bool,
    /// Every key from the key on.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
}

impl PermRange {
    fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let key = self.key.as_bytes().to_vec();
        let end = if self.prefix {
            tenure_kv::api::prefix_end(&key).to_vec()
        } else if self.from_key {
            vec![0]
        } else {
            self.range_end.clone().unwrap_or_default().into_bytes()
        };
        (key, end)
    }
}

/// `tenure role ...`.
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Add a role.
    Add {
        /// The role.
        name: String,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// Delete a role.
    Delete {
        /// The role.
        name: String,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// Show a role's permissions.
    Get {
        /// The role.
        name: String,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// List the roles.
    List(AuthConn),
    /// Grant a role `read`, `write` or `readwrite` on a key or range.
    GrantPermission {
        /// The role.
        name: String,
        /// `read`, `write` or `readwrite`.
        perm: String,
        /// The keys.
        #[command(flatten)]
        range: PermRange,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
    /// Revoke a role's permission on a key or range.
    RevokePermission {
        /// The role.
        name: String,
        /// The keys.
        #[command(flatten)]
        range: PermRange,
        /// Connection and credentials.
        #[command(flatten)]
        conn: AuthConn,
    },
}

/// `user:password` split as etcdctl splits it; `None` for the password when there is no `:`.
fn split_user(s: &str) -> (String, Option<String>) {
    match s.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (s.to_string(), None),
    }
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        bail!("password cannot be empty");
    }
    Ok(p)
}

/// Runs `call` through [`with_retries`], which logs in first if `--user` was given.
async fn authed<Req, Resp, F, Fut>(conn: &AuthConn, request: Req, call: F) -> anyhow::Result<Resp>
where
    Req: Clone,
    F: Fn(AuthClient<Authed>, tonic::Request<Req>) -> Fut + Clone,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    with_retries(&conn.client, |ch| {
        let (request, call) = (request.clone(), call.clone());
        async move { call(AuthClient::new(ch), tonic::Request::new(request)).await }
    })
    .await
}

/// `tenure auth ...`.
pub async fn auth(command: &AuthCommand) -> anyhow::Result<String> {
    match command {
        AuthCommand::Enable(c) => {
            authed(c, pb::AuthEnableRequest {}, |mut a, r| async move { a.auth_enable(r).await })
                .await?;
            Ok("Authentication Enabled\n".into())
        }
        AuthCommand::Disable(c) => {
            authed(c, pb::AuthDisableRequest {}, |mut a, r| async move { a.auth_disable(r).await })
                .await?;
            Ok("Authentication Disabled\n".into())
        }
        AuthCommand::Status(c) => {
            let s =
                authed(
                    c,
                    pb::AuthStatusRequest {},
                    |mut a, r| async move { a.auth_status(r).await },
                )
                .await?;
            Ok(format!("Authentication Status: {}\nAuthRevision: {}\n", s.enabled, s.auth_revision))
        }
    }
}

/// `tenure user ...`.
pub async fn user(command: &UserCommand) -> anyhow::Result<String> {
    match command {
        UserCommand::Add { new_user, no_password, new_user_password, conn } => {
            let (name, password) = split_user(new_user);
            let password = if *no_password {
                String::new()
            } else {
                match password.or_else(|| new_user_password.clone()) {
                    Some(p) => p,
                    None => read_password()?,
                }
            };
            let req = pb::AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(authpb::UserAddOptions { no_password: *no_password }),
                hashed_password: String::new(),
            };
            authed(conn, req, |mut a, r| async move { a.user_add(r).await }).await?;
            Ok(format!("User {name} created\n"))
        }
        UserCommand::Delete { name, conn } => {
            let req = pb::AuthUserDeleteRequest { name: name.clone() };
            authed(conn, req, |mut a, r| async move { a.user_delete(r).await }).await?;
            Ok(format!("User {name} deleted\n"))
        }
        UserCommand::Get { name, conn } => {
            let req = pb::AuthUserGetRequest { name: name.clone() };
            let r = authed(conn, req, |mut a, r| async move { a.user_get(r).await }).await?;
            Ok(format!("User: {name}\nRoles: {}\n", r.roles.join(" ")))
        }
        UserCommand::List(conn) => {
            let r =
                authed(
                    conn,
                    pb::AuthUserListRequest {},
                    |mut a, r| async move { a.user_list(r).await },
                )
                .await?;
            Ok(r.users.iter().map(|u| format!("{u}\n")).collect())
        }
        UserCommand::Passwd { name, conn } => {
            let password = read_password()?;
            let req = pb::AuthUserChangePasswordRequest {
                name: name.clone(),
                password,
                hashed_password: String::new(),
            };
            authed(conn, req, |mut a, r| async move { a.user_change_password(r).await }).await?;
            Ok("Password updated\n".into())
        }
        UserCommand::GrantRole { name, role, conn } => {
            let req = pb::AuthUserGrantRoleRequest { user: name.clone(), role: role.clone() };
            authed(conn, req, |mut a, r| async move { a.user_grant_role(r).await }).await?;
            Ok(format!("Role {role} is granted to user {name}\n"))
        }
        UserCommand::RevokeRole { name, role, conn } => {
            let req = pb::AuthUserRevokeRoleRequest { name: name.clone(), role: role.clone() };
            authed(conn, req, |mut a, r| async move { a.user_revoke_role(r).await }).await?;
            Ok(format!("Role {role} is revoked from user {name}\n"))
        }
    }
}

/// etcdctl's rendering of one permission's keys: the key alone, or `[key, end)` with
/// `(prefix key)` or `(from key)` when the range is one.
fn format_range(key: &[u8], end: &[u8]) -> String {
    let k = String::from_utf8_lossy(key);
    if end.is_empty() {
        return k.into_owned();
    }
    if end == [0] {
        return format!("[{k}, <open ended>");
    }
    let e = String::from_utf8_lossy(end);
    if tenure_kv::api::prefix_end(key).as_ref() == end {
        format!("[{k}, {e}) (prefix {k})")
    } else {
        format!("[{k}, {e})")
    }
}

fn format_role(name: &str, perms: &[authpb::Permission]) -> String {
    let mut out = format!("Role {name}\nKV Read:\n");
    for p in perms.iter().filter(|p| p.perm_type != 1) {
        out.push_str(&format!("\t{}\n", format_range(&p.key, &p.range_end)));
    }
    out.push_str("KV Write:\n");
    for p in perms.iter().filter(|p| p.perm_type != 0) {
        out.push_str(&format!("\t{}\n", format_range(&p.key, &p.range_end)));
    }
    out
}

/// `tenure role ...`.
pub async fn role(command: &RoleCommand) -> anyhow::Result<String> {
    match command {
        RoleCommand::Add { name, conn } => {
            let req = pb::AuthRoleAddRequest { name: name.clone() };
            authed(conn, req, |mut a, r| async move { a.role_add(r).await }).await?;
            Ok(format!("Role {name} created\n"))
        }
        RoleCommand::Delete { name, conn } => {
            let req = pb::AuthRoleDeleteRequest { role: name.clone() };
            authed(conn, req, |mut a, r| async move { a.role_delete(r).await }).await?;
            Ok(format!("Role {name} deleted\n"))
        }
        RoleCommand::Get { name, conn } => {
            let req = pb::AuthRoleGetRequest { role: name.clone() };
            let r = authed(conn, req, |mut a, r| async move { a.role_get(r).await }).await?;
            Ok(format_role(name, &r.perm))
        }
        RoleCommand::List(conn) => {
            let r =
                authed(
                    conn,
                    pb::AuthRoleListRequest {},
                    |mut a, r| async move { a.role_list(r).await },
                )
                .await?;
            Ok(r.roles.iter().map(|u| format!("{u}\n")).collect())
        }
        RoleCommand::GrantPermission { name, perm, range, conn } => {
            let perm_type = match perm.to_ascii_lowercase().as_str() {
                "read" => 0,
                "write" => 1,
                "readwrite" => 2,
                other => return Err(anyhow!("invalid permission type {other}")),
            };
            let (key, range_end) = range.bounds();
            let req = pb::AuthRoleGrantPermissionRequest {
                name: name.clone(),
                perm: Some(authpb::Permission {
                    perm_type,
                    key: key.into(),
                    range_end: range_end.into(),
                }),
            };
            authed(conn, req, |mut a, r| async move { a.role_grant_permission(r).await }).await?;
            Ok(format!("Role {name} updated\n"))
        }
        RoleCommand::RevokePermission { name, range, conn } => {
            let (key, range_end) = range.bounds();
            let req = pb::AuthRoleRevokePermissionRequest {
                role: name.clone(),
                key: key.clone().into(),
                range_end: range_end.clone().into(),
            };
            authed(conn, req, |mut a, r| async move { a.role_revoke_permission(r).await }).await?;
            Ok(if range_end.is_empty() {
                format!(
                    "Permission of key {} is revoked from role {name}\n",
                    String::from_utf8_lossy(&key)
                )
            } else {
                format!(
                    "Permission of range {} is revoked from role {name}\n",
                    format_range(&key, &range_end)
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_print_as_etcdctl_prints_them() {
        assert_eq!(format_range(b"k", b""), "k");
        assert_eq!(format_range(b"/a/", b"/a0"), "[/a/, /a0) (prefix /a/)");
        assert_eq!(format_range(b"a", b"c"), "[a, c)");
        assert_eq!(format_range(b"a", b"\0"), "[a, <open ended>");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn user_and_password_split_at_the_first_colon() {
        assert_eq!(split_user("root:pw:x"), ("root".into(), Some("pw:x".into())));
        assert_eq!(split_user("root"), ("root".into(), None));
    }
}
