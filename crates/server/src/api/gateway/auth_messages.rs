//! The JSON form of the `Auth` service's messages (`rpc.proto`, `auth.proto`), as
//! [`super::messages`] does for the others: requests read, responses written, field by field
//! under the proto's own field names.

use super::json::{Fields, FromJson, JsonError, Object, ToJson, empty_request, header_only};
use crate::pb::authpb;
use crate::pb::etcdserverpb as pb;

/// `authpb.Permission.Type`'s value names, indexed by value.
const PERMISSION_TYPES: &[&str] = &["READ", "WRITE", "READWRITE"];

// ---- responses ----------------------------------------------------------------------------

impl ToJson for authpb::Permission {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.enumeration("permType", self.perm_type, PERMISSION_TYPES);
        o.bytes("key", &self.key);
        o.bytes("range_end", &self.range_end);
    }
}

impl ToJson for pb::AuthStatusResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.bool("enabled", self.enabled);
        o.u64("authRevision", self.auth_revision);
    }
}

impl ToJson for pb::AuthenticateResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.string("token", &self.token);
    }
}

impl ToJson for pb::AuthUserGetResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.strings("roles", &self.roles);
    }
}

impl ToJson for pb::AuthRoleGetResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.messages("perm", &self.perm);
    }
}

impl ToJson for pb::AuthRoleListResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.strings("roles", &self.roles);
    }
}

impl ToJson for pb::AuthUserListResponse {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.message("header", self.header.as_ref());
        o.strings("users", &self.users);
    }
}

header_only!(
    pb::AuthEnableResponse,
    pb::AuthDisableResponse,
    pb::AuthUserAddResponse,
    pb::AuthUserDeleteResponse,
    pb::AuthUserChangePasswordResponse,
    pb::AuthUserGrantRoleResponse,
    pb::AuthUserRevokeRoleResponse,
    pb::AuthRoleAddResponse,
    pb::AuthRoleDeleteResponse,
    pb::AuthRoleGrantPermissionResponse,
    pb::AuthRoleRevokePermissionResponse
);

// ---- requests -----------------------------------------------------------------------------

impl FromJson for authpb::Permission {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(authpb::Permission {
            perm_type: f.enumeration("permType", PERMISSION_TYPES, "authpb.Permission_Type")?,
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
        })
    }
}

impl FromJson for authpb::UserAddOptions {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(authpb::UserAddOptions { no_password: f.bool("no_password")? })
    }
}

impl FromJson for pb::AuthenticateRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::AuthenticateRequest { name: f.string("name")?, password: f.string("password")? })
    }
}

impl FromJson for pb::AuthUserAddRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::AuthUserAddRequest {
            name: f.string("name")?,
            password: f.string("password")?,
            options: f.message("options")?,
            hashed_password: f.string("hashedPassword")?,
        })
    }
}

impl FromJson for pb::AuthUserChangePasswordRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::AuthUserChangePasswordRequest {
            name: f.string("name")?,
            password: f.string("password")?,
            hashed_password: f.string("hashedPassword")?,
        })
    }
}

impl FromJson for pb::AuthUserGrantRoleRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::AuthUserGrantRoleRequest { user: f.string("user")?, role: f.string("role")? })
    }
}

impl FromJson for pb::AuthUserRevokeRoleRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::AuthUserRevokeRoleRequest { name: f.string("name")?, role: f.string("role")? })
    }
}

impl FromJson for pb::AuthRoleGrantPermissionRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::AuthRoleGrantPermissionRequest { name: f.string("name")?, perm: f.message("perm")? })
    }
}

impl FromJson for pb::AuthRoleRevokePermissionRequest {
    fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
        Ok(pb::AuthRoleRevokePermissionRequest {
            role: f.string("role")?,
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
        })
    }
}

/// The requests that are one name field.
macro_rules! named_request {
    ($($t:ident { $field:ident: $json:literal }),*) => {$(
        impl FromJson for pb::$t {
            fn from_fields(f: &Fields<'_>) -> Result<Self, JsonError> {
                Ok(pb::$t { $field: f.string($json)? })
            }
        }
    )*};
}
named_request!(
    AuthUserGetRequest { name: "name" },
    AuthUserDeleteRequest { name: "name" },
    AuthRoleAddRequest { name: "name" },
    AuthRoleGetRequest { role: "role" },
    AuthRoleDeleteRequest { role: "role" }
);

empty_request!(
    pb::AuthEnableRequest,
    pb::AuthDisableRequest,
    pb::AuthStatusRequest,
    pb::AuthUserListRequest,
    pb::AuthRoleListRequest
);

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: FromJson>(s: &str) -> T {
        T::from_json(&serde_json::from_str(s).unwrap()).unwrap()
    }

    #[test]
    fn a_permission_grant_reads_its_enum_by_name_or_number_and_range_end_by_either_name() {
        let r: pb::AuthRoleGrantPermissionRequest = read(
            r#"{"name":"app","perm":{"permType":"READWRITE","key":"L2Ev","range_end":"L2Iv"}}"#,
        );
        assert_eq!(r.name, "app");
        let perm = r.perm.expect("perm");
        assert_eq!(
            (perm.perm_type, &perm.key[..], &perm.range_end[..]),
            (2, &b"/a/"[..], &b"/b/"[..])
        );
        let r: pb::AuthRoleGrantPermissionRequest =
            read(r#"{"name":"app","perm":{"permType":1,"key":"YQ==","rangeEnd":"Yg=="}}"#);
        let perm = r.perm.expect("perm");
        assert_eq!((perm.perm_type, &perm.range_end[..]), (1, &b"b"[..]));
    }

    #[test]
    fn a_role_writes_its_permissions_with_the_default_type_left_out() {
        let r = pb::AuthRoleGetResponse {
            header: None,
            perm: vec![
                authpb::Permission { perm_type: 0, key: "k".into(), range_end: "".into() },
                authpb::Permission { perm_type: 2, key: "a".into(), range_end: "b".into() },
            ],
        };
        assert_eq!(
            r.to_json(),
            r#"{"perm":[{"key":"aw=="},{"permType":"READWRITE","key":"YQ==","range_end":"Yg=="}]}"#
        );
    }

    #[test]
    fn a_string_field_of_another_type_is_refused_as_go_refuses_it() {
        let e = pb::AuthenticateRequest::from_json(&serde_json::json!({"name": 5})).unwrap_err();
        assert_eq!(e.0, "json: cannot unmarshal number 5 into Go value of type string");
    }
}
