//! Who a Kafka client is and what it may do: SCRAM users ([`scram`]) and ACLs ([`acl`]), both
//! replicated through the metadata group, and the [`Authorizer`] that decides each request.
//! Authorization is on exactly when the Kafka listener requires SASL, so a node without
//! `kafka.sasl.mechanisms` serves every client as it always did.

pub mod acl;
pub mod scram;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use acl::{AclBinding, AclFilter, Operation, ResourceType};
pub use scram::{Mechanism, ScramCredential};

/// The principal of a client that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";
/// The SASL PLAIN mechanism name.
pub const PLAIN: &str = "PLAIN";

/// The principal of a user name.
pub fn principal_of(user: &str) -> String {
    format!("User:{user}")
}

/// Users and ACLs, as the metadata group replicates them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityState {
    /// User name -> its credential per SCRAM mechanism.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>,
    /// Every ACL.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acls: BTreeSet<AclBinding>,
}

/// A change to users or ACLs; each is idempotent, so replaying one converges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SecurityChange {
    /// Set (or, with `None`, remove) a user's credential for one mechanism.
    SetCredential {
        /// User name.
        user: String,
        /// Mechanism.
        mechanism: Mechanism,
        /// The credential.
        credential: Option<ScramCredential>,
    },
    /// Add ACLs.
    AddAcls(Vec<AclBinding>),
    /// Remove ACLs.
    RemoveAcls(Vec<AclBinding>),
}

impl SecurityState {
    /// The stored credential of `user` for `mechanism`.
    pub fn credential(&self, user: &str, mechanism: Mechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&mechanism)
    }

    /// Applies `change`.
    pub fn apply(&mut self, change: &SecurityChange) {
        match change {
            SecurityChange::SetCredential { user, mechanism, credential: Some(c) } => {
                self.users.entry(user.clone()).or_default().insert(*mechanism, c.clone());
            }
            SecurityChange::SetCredential { user, mechanism, credential: None } => {
                if let Some(creds) = self.users.get_mut(user) {
                    creds.remove(mechanism);
                    if creds.is_empty() {
                        self.users.remove(user);
                    }
                }
            }
            SecurityChange::AddAcls(acls) => self.acls.extend(acls.iter().cloned()),
            SecurityChange::RemoveAcls(acls) => {
                for acl in acls {
                    self.acls.remove(acl);
                }
            }
        }
    }

    /// The changes that turn `current` into this state.
    pub fn changes_from(&self, current: &SecurityState) -> Vec<SecurityChange> {
        let mut changes = Vec::new();
        let credentials = |s: &SecurityState| -> BTreeMap<(String, Mechanism), ScramCredential> {
            s.users.iter().flat_map(|(u, m)| m.iter().map(move |(mech, c)| ((u.clone(), *mech), c.clone()))).collect()
        };
        let (want, have) = (credentials(self), credentials(current));
        for (user, mechanism) in have.keys().filter(|k| !want.contains_key(*k)) {
            changes.push(SecurityChange::SetCredential { user: user.clone(), mechanism: *mechanism, credential: None });
        }
        for ((user, mechanism), credential) in want.iter().filter(|(k, c)| have.get(*k) != Some(*c)) {
            changes.push(SecurityChange::SetCredential { user: user.clone(), mechanism: *mechanism, credential: Some(credential.clone()) });
        }
        let stale: Vec<AclBinding> = current.acls.difference(&self.acls).cloned().collect();
        if !stale.is_empty() {
            changes.push(SecurityChange::RemoveAcls(stale));
        }
        let missing: Vec<AclBinding> = self.acls.difference(&current.acls).cloned().collect();
        if !missing.is_empty() {
            changes.push(SecurityChange::AddAcls(missing));
        }
        changes
    }
}

/// Decides whether a principal may do an operation on a resource.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    enabled: bool,
    super_users: BTreeSet<String>,
}

impl Authorizer {
    /// Enforcing ACLs when `enabled` (SASL is on), with `super_users` (`User:name` or bare
    /// names) allowed everything.
    pub fn new(enabled: bool, super_users: &[String]) -> Authorizer {
        let super_users = super_users.iter().map(|u| if u.contains(':') { u.clone() } else { principal_of(u) }).collect();
        Authorizer { enabled, super_users }
    }

    /// Whether ACLs are enforced.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal`, connected from `host`, may do `operation` on the resource.
    pub fn permits(&self, state: &SecurityState, principal: &str, host: Option<IpAddr>, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        let host = host.map(|h| h.to_string()).unwrap_or_default();
        acl::permits(&state.acls, principal, &host, operation, resource_type, name)
    }

    /// Whether `principal` holds an allow of WRITE on some topic (Kafka lets such a producer be
    /// idempotent without IDEMPOTENT_WRITE on the cluster).
    pub fn may_write_some_topic(&self, state: &SecurityState, principal: &str) -> bool {
        !self.enabled
            || self.super_users.contains(principal)
            || state.acls.iter().any(|a| {
                a.resource_type == ResourceType::Topic
                    && (a.principal == principal || a.principal == acl::ANY_PRINCIPAL)
                    && a.permission == acl::Permission::Allow
                    && matches!(a.operation, Operation::Write | Operation::All)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_from_bring_one_state_to_another() {
        let cred = |pw: &str| ScramCredential::from_password(Mechanism::Sha256, pw, 4096).unwrap();
        let acl = |name: &str| AclBinding::new(2, name, 3, "User:a", "*", 3, 3).unwrap();
        let mut current = SecurityState::default();
        for change in [
            SecurityChange::SetCredential { user: "gone".into(), mechanism: Mechanism::Sha256, credential: Some(cred("x")) },
            SecurityChange::SetCredential { user: "kept".into(), mechanism: Mechanism::Sha256, credential: Some(cred("old")) },
            SecurityChange::AddAcls(vec![acl("stale"), acl("kept")]),
        ] {
            current.apply(&change);
        }
        let mut target = SecurityState::default();
        target.apply(&SecurityChange::SetCredential { user: "kept".into(), mechanism: Mechanism::Sha256, credential: Some(cred("new")) });
        target.apply(&SecurityChange::AddAcls(vec![acl("kept"), acl("new")]));
        for change in target.changes_from(&current) {
            current.apply(&change);
        }
        assert_eq!(current, target);
        assert!(target.changes_from(&target).is_empty());
    }

    #[test]
    fn super_users_and_a_disabled_authorizer_allow_everything() {
        let state = SecurityState::default();
        let topic = |a: &Authorizer, p: &str| a.permits(&state, p, None, Operation::Delete, ResourceType::Topic, "t");
        assert!(topic(&Authorizer::new(false, &[]), "User:anyone"));
        let on = Authorizer::new(true, &["admin".into(), "User:root".into()]);
        assert!(topic(&on, "User:admin") && topic(&on, "User:root"));
        assert!(!topic(&on, "User:alice"));
        assert!(!on.may_write_some_topic(&state, "User:alice"));
    }
}
