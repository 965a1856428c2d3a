//! Kafka's access control lists: bindings (who may or may not do what on which resources),
//! the filters DescribeAcls and DeleteAcls select them with, and the decision for one request.
//! The numbers are Kafka's wire values.

use serde::{Deserialize, Serialize};

/// The resource name of the cluster, the only one a cluster ACL may name.
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";
/// A literal resource name that matches every name.
pub const WILDCARD: &str = "*";
/// The principal a binding names to match every user.
pub const ANY_PRINCIPAL: &str = "User:*";

/// What an ACL protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic, by name.
    Topic,
    /// A consumer group, by id.
    Group,
    /// The cluster (`kafka-cluster`).
    Cluster,
    /// A transactional id.
    TransactionalId,
}

/// How a binding's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The name itself (or every name, for `*`).
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

/// What a principal does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All,
    /// Fetch, join and commit to a group.
    Read,
    /// Produce.
    Write,
    /// Create topics.
    Create,
    /// Delete topics and groups.
    Delete,
    /// Add partitions, change ACLs and users.
    Alter,
    /// See that a resource exists.
    Describe,
    /// Broker-to-broker actions.
    ClusterAction,
    /// Read configs.
    DescribeConfigs,
    /// Change configs (and so plugin bindings).
    AlterConfigs,
    /// Idempotent produce.
    IdempotentWrite,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Refuses the operation, whatever else allows it.
    Deny,
    /// Allows the operation unless a deny matches.
    Allow,
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// Its name, or the prefix of the names it covers.
    pub resource_name: String,
    /// How the name matches.
    pub pattern_type: PatternType,
    /// `User:name`, or `User:*` for everyone.
    pub principal: String,
    /// Client address, or `*` for every host.
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

/// Why a binding or filter from a client is refused (INVALID_REQUEST).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AclError {
    /// A value Kafka does not define, or one that is only valid in a filter.
    #[error("invalid {0} {1}")]
    Value(&'static str, i8),
    /// A resource type Sluice has no such resources of.
    #[error("ACLs on resource type {0} are not supported")]
    UnsupportedResource(i8),
    /// The principal is not `User:name`.
    #[error("principal {0:?} is not of the form User:name")]
    Principal(String),
    /// A cluster ACL not on `kafka-cluster`, or an empty name or host.
    #[error("{0}")]
    Name(String),
}

fn resource_type(value: i8) -> Result<Option<ResourceType>, AclError> {
    Ok(Some(match value {
        1 => return Ok(None),
        2 => ResourceType::Topic,
        3 => ResourceType::Group,
        4 => ResourceType::Cluster,
        5 => ResourceType::TransactionalId,
        6 | 7 => return Err(AclError::UnsupportedResource(value)),
        _ => return Err(AclError::Value("resource type", value)),
    }))
}

impl ResourceType {
    /// Kafka's number.
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }
}

impl PatternType {
    /// Kafka's number.
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }
}

const OPERATIONS: [(i8, Operation); 11] = [
    (2, Operation::All),
    (3, Operation::Read),
    (4, Operation::Write),
    (5, Operation::Create),
    (6, Operation::Delete),
    (7, Operation::Alter),
    (8, Operation::Describe),
    (9, Operation::ClusterAction),
    (10, Operation::DescribeConfigs),
    (11, Operation::AlterConfigs),
    (12, Operation::IdempotentWrite),
];

fn operation(value: i8) -> Result<Option<Operation>, AclError> {
    if value == 1 {
        return Ok(None);
    }
    OPERATIONS.iter().find(|(code, _)| *code == value).map(|(_, op)| Some(*op)).ok_or(AclError::Value("operation", value))
}

impl Operation {
    /// Kafka's number.
    pub fn code(self) -> i8 {
        OPERATIONS.iter().find(|(_, op)| *op == self).map_or(0, |(code, _)| *code)
    }

    /// Whether an allow of `self` allows `wanted`: the same operation, ALL, or one that
    /// implies it (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
    /// DESCRIBE_CONFIGS), as in Kafka.
    fn allows(self, wanted: Operation) -> bool {
        self == wanted
            || self == Operation::All
            || (wanted == Operation::Describe && matches!(self, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter))
            || (wanted == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }
}

fn permission(value: i8) -> Result<Option<Permission>, AclError> {
    match value {
        1 => Ok(None),
        2 => Ok(Some(Permission::Deny)),
        3 => Ok(Some(Permission::Allow)),
        _ => Err(AclError::Value("permission type", value)),
    }
}

impl Permission {
    /// Kafka's number.
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }
}

/// What a filter asks of a binding's pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternFilter {
    /// Any pattern, the name compared as it is.
    Any,
    /// Bindings that apply to a resource of that name (literal, `*` or a prefix of it).
    Match,
    /// Exactly this pattern type.
    Exactly(PatternType),
}

/// A selection of bindings (DescribeAcls, DeleteAcls); `None` matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    resource_type: Option<ResourceType>,
    resource_name: Option<String>,
    pattern: PatternFilter,
    principal: Option<String>,
    host: Option<String>,
    operation: Option<Operation>,
    permission: Option<Permission>,
}

impl AclFilter {
    /// A filter from Kafka's wire values (1 is ANY; pattern 2 is MATCH).
    pub fn new(resource_type_value: i8, resource_name: Option<&str>, pattern_value: i8, principal: Option<&str>, host: Option<&str>, operation_value: i8, permission_value: i8) -> Result<AclFilter, AclError> {
        let pattern = match pattern_value {
            1 => PatternFilter::Any,
            2 => PatternFilter::Match,
            3 => PatternFilter::Exactly(PatternType::Literal),
            4 => PatternFilter::Exactly(PatternType::Prefixed),
            _ => return Err(AclError::Value("pattern type", pattern_value)),
        };
        Ok(AclFilter {
            resource_type: resource_type(resource_type_value)?,
            resource_name: resource_name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: operation(operation_value)?,
            permission: permission(permission_value)?,
        })
    }

    /// Whether `binding` is selected.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let name_matches = match (&self.resource_name, self.pattern) {
            (None, PatternFilter::Exactly(p)) => binding.pattern_type == p,
            (None, _) => true,
            (Some(name), PatternFilter::Any) => binding.resource_name == *name,
            (Some(name), PatternFilter::Exactly(p)) => binding.pattern_type == p && binding.resource_name == *name,
            (Some(name), PatternFilter::Match) => binding.covers(name),
        };
        name_matches
            && self.resource_type.is_none_or(|t| t == binding.resource_type)
            && self.principal.as_ref().is_none_or(|p| *p == binding.principal)
            && self.host.as_ref().is_none_or(|h| *h == binding.host)
            && self.operation.is_none_or(|o| o == binding.operation)
            && self.permission.is_none_or(|p| p == binding.permission)
    }
}

impl AclBinding {
    /// A binding from Kafka's wire values (CreateAcls), every field concrete.
    pub fn new(resource_type_value: i8, resource_name: &str, pattern_value: i8, principal: &str, host: &str, operation_value: i8, permission_value: i8) -> Result<AclBinding, AclError> {
        let resource_type = resource_type(resource_type_value)?.ok_or(AclError::Value("resource type", resource_type_value))?;
        let pattern_type = match pattern_value {
            3 => PatternType::Literal,
            4 => PatternType::Prefixed,
            _ => return Err(AclError::Value("pattern type", pattern_value)),
        };
        let operation = operation(operation_value)?.ok_or(AclError::Value("operation", operation_value))?;
        let permission = permission(permission_value)?.ok_or(AclError::Value("permission type", permission_value))?;
        if principal.split_once(':').is_none_or(|(kind, name)| kind != "User" || name.is_empty()) {
            return Err(AclError::Principal(principal.to_string()));
        }
        if resource_name.is_empty() || host.is_empty() {
            return Err(AclError::Name("the resource name and host must not be empty".into()));
        }
        if resource_type == ResourceType::Cluster && (resource_name != CLUSTER_RESOURCE || pattern_type != PatternType::Literal) {
            return Err(AclError::Name(format!("a cluster ACL names the literal resource {CLUSTER_RESOURCE}")));
        }
        Ok(AclBinding { resource_type, resource_name: resource_name.to_string(), pattern_type, principal: principal.to_string(), host: host.to_string(), operation, permission })
    }

    /// Whether this binding applies to the resource called `name` (of its type).
    fn covers(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Literal => self.resource_name == name || self.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&self.resource_name),
        }
    }

    fn applies_to(&self, principal: &str, host: &str, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && (self.principal == principal || self.principal == ANY_PRINCIPAL)
            && (self.host == host || self.host == WILDCARD)
            && self.covers(name)
    }
}

/// Kafka's decision: a matching deny of the operation (or of ALL) refuses; otherwise a matching
/// allow of it, of ALL or of an operation that implies it is needed.
pub fn permits<'a>(acls: impl IntoIterator<Item = &'a AclBinding>, principal: &str, host: &str, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
    let mut allowed = false;
    for acl in acls {
        if !acl.applies_to(principal, host, resource_type, name) {
            continue;
        }
        match acl.permission {
            Permission::Deny if acl.operation == operation || acl.operation == Operation::All => return false,
            Permission::Deny => {}
            Permission::Allow => allowed |= acl.operation.allows(operation),
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(resource: i8, name: &str, pattern: i8, principal: &str, operation: i8, permission: i8) -> AclBinding {
        AclBinding::new(resource, name, pattern, principal, "*", operation, permission).unwrap()
    }

    #[test]
    fn allows_denies_implications_prefixes_and_wildcards_decide_as_in_kafka() {
        let acls = [
            acl(2, "orders", 3, "User:alice", 4, 3),      // alice writes orders
            acl(2, "logs-", 4, "User:alice", 3, 3),       // alice reads logs-*
            acl(2, "logs-secret", 3, "User:alice", 2, 2), // but nothing on logs-secret
            acl(2, "*", 3, "User:*", 10, 3),              // everyone describes configs of all topics
            acl(3, "g", 3, "User:bob", 2, 3),             // bob does anything with group g
        ];
        let can = |principal, op, kind, name| permits(&acls, principal, "10.0.0.1", op, kind, name);
        assert!(can("User:alice", Operation::Write, ResourceType::Topic, "orders"));
        assert!(can("User:alice", Operation::Describe, ResourceType::Topic, "orders"), "write implies describe");
        assert!(!can("User:alice", Operation::Read, ResourceType::Topic, "orders"));
        assert!(!can("User:alice", Operation::Delete, ResourceType::Topic, "orders"));
        assert!(!can("User:alice", Operation::Write, ResourceType::Topic, "orders2"), "literal is exact");
        assert!(can("User:alice", Operation::Read, ResourceType::Topic, "logs-app"));
        assert!(!can("User:alice", Operation::Read, ResourceType::Topic, "logs-secret"), "deny wins");
        assert!(!can("User:alice", Operation::DescribeConfigs, ResourceType::Topic, "logs-secret"), "deny ALL wins over the wildcard");
        assert!(can("User:carol", Operation::DescribeConfigs, ResourceType::Topic, "anything"));
        assert!(!can("User:carol", Operation::AlterConfigs, ResourceType::Topic, "anything"), "describe does not imply alter");
        assert!(can("User:bob", Operation::Read, ResourceType::Group, "g"));
        assert!(!can("User:bob", Operation::Read, ResourceType::Topic, "g"), "types do not mix");
        assert!(!permits(&[], "User:alice", "h", Operation::Describe, ResourceType::Cluster, CLUSTER_RESOURCE), "no ACL, no access");
    }

    #[test]
    fn filters_select_as_describe_and_delete_acls_do() {
        let literal = acl(2, "logs-app", 3, "User:alice", 3, 3);
        let prefixed = acl(2, "logs-", 4, "User:alice", 3, 3);
        let wildcard = acl(2, "*", 3, "User:bob", 4, 3);
        let filter = |name: Option<&str>, pattern| AclFilter::new(2, name, pattern, None, None, 1, 1).unwrap();
        let selected = |f: &AclFilter| [&literal, &prefixed, &wildcard].into_iter().filter(|b| f.matches(b)).count();
        assert_eq!(selected(&filter(None, 1)), 3);
        assert_eq!(selected(&filter(Some("logs-app"), 2)), 3, "MATCH: literal, prefix and wildcard all apply");
        assert_eq!(selected(&filter(Some("logs-app"), 1)), 1, "ANY: the name as it is");
        assert_eq!(selected(&filter(Some("logs-"), 4)), 1);
        assert_eq!(selected(&filter(None, 4)), 1);
        let by_principal = AclFilter::new(1, None, 1, Some("User:bob"), None, 1, 1).unwrap();
        assert_eq!(selected(&by_principal), 1);
    }

    #[test]
    fn bad_bindings_are_refused_with_a_reason() {
        assert_eq!(AclBinding::new(1, "t", 3, "User:a", "*", 3, 3).unwrap_err(), AclError::Value("resource type", 1));
        assert_eq!(AclBinding::new(2, "t", 2, "User:a", "*", 3, 3).unwrap_err(), AclError::Value("pattern type", 2));
        assert_eq!(AclBinding::new(2, "t", 3, "alice", "*", 3, 3).unwrap_err(), AclError::Principal("alice".into()));
        assert_eq!(AclBinding::new(2, "t", 3, "User:a", "*", 1, 3).unwrap_err(), AclError::Value("operation", 1));
        assert_eq!(AclBinding::new(7, "t", 3, "User:a", "*", 3, 3).unwrap_err(), AclError::UnsupportedResource(7));
        assert!(matches!(AclBinding::new(4, "other", 3, "User:a", "*", 7, 3), Err(AclError::Name(_))));
        assert!(AclFilter::new(2, None, 9, None, None, 1, 1).is_err());
    }
}
