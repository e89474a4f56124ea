//! The tables: on demand, recoverable, protectable, encrypted with the key parameter, and expiring their
//! records through the code's TTL attribute (or kept for a stated reason).

use super::iam::flatten;
use super::*;

#[test]
fn tables_are_on_demand_recoverable_and_protectable() {
    let t = Template::load();
    assert_eq!(
        t.doc()["Conditions"]["ProtectTables"],
        serde_yaml::from_str::<Value>("!Equals [!Ref TableDeletionProtection, \"true\"]").unwrap()
    );
    let tables = t.tables();
    assert!(!tables.is_empty());
    for table in tables {
        let p = &table.properties;
        let id = &table.logical_id;
        assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"), "{id}");
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
            Some(true),
            "{id}: point-in-time recovery"
        );
        assert_eq!(
            p["DeletionProtectionEnabled"],
            serde_yaml::from_str::<Value>("!If [ProtectTables, true, false]").unwrap(),
            "{id}: deletion protection"
        );
    }
}

#[test]
fn every_table_is_encrypted_with_the_key_parameter_when_it_is_set() {
    let t = Template::load();
    let doc = t.doc();
    assert_eq!(
        doc["Conditions"]["HasTableKmsKey"],
        serde_yaml::from_str::<Value>("!Not [!Equals [!Ref TableKmsKeyArn, \"\"]]").unwrap()
    );
    let expected = serde_yaml::from_str::<Value>(
        "!If [HasTableKmsKey, {SSEEnabled: true, SSEType: KMS, KMSMasterKeyId: !Ref TableKmsKeyArn}, !Ref AWS::NoValue]",
    )
    .unwrap();
    for table in t.tables() {
        assert_eq!(
            table.properties["SSESpecification"], expected,
            "{}: SSESpecification",
            table.logical_id
        );
    }
    // The key policy: only KMS actions, no wildcard, on the key parameter only, through DynamoDB only.
    let policy = &doc["Resources"]["TableKmsKeyPolicy"];
    assert_eq!(policy["Condition"].as_str(), Some("HasTableKmsKey"));
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap();
    assert_eq!(statements.len(), 1);
    let s = &statements[0];
    assert_eq!(ref_of(&s["Resource"]), Some("TableKmsKeyArn"));
    assert_eq!(
        strings(&s["Action"]),
        [
            "kms:Decrypt",
            "kms:DescribeKey",
            "kms:Encrypt",
            "kms:GenerateDataKey"
        ]
    );
    assert!(
        !flatten(&s["Condition"]["StringEquals"]["kms:ViaService"]).is_empty(),
        "kms:ViaService"
    );
    // Attached to the roles of the functions that use a table, and to no other.
    for (role, r) in t.resources_of_type("AWS::IAM::Role") {
        let uses_a_table = statements_of(r).iter().any(|s| {
            strings(&s["Action"])
                .iter()
                .any(|a| a.starts_with("dynamodb:"))
        });
        let has_key_policy = flatten(&r["Properties"]["ManagedPolicyArns"])
            .iter()
            .any(|v| v == "TableKmsKeyPolicy");
        assert_eq!(has_key_policy, uses_a_table, "{role}: the KMS key policy");
    }
}

fn statements_of(role: &Value) -> Vec<Value> {
    role["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// Tables whose items stay until deleted by a request, and why no TTL may remove them.
const KEPT_FOR_GOOD: [(&str, &str); 3] = [
    (
        "KvTable",
        "a deleted key keeps its item (a tombstone with its version), so versions never go back",
    ),
    ("CounterTable", "totals are the data"),
    (
        "WidgetTable",
        "widgets are the data; a delete removes the item",
    ),
];

#[test]
fn every_table_expires_its_records_through_the_codes_ttl_attribute_or_keeps_them_for_a_stated_reason()
 {
    let t = Template::load();
    let kept: BTreeMap<&str, &str> = KEPT_FOR_GOOD.into_iter().collect();
    for table in t.tables() {
        let id = table.logical_id.as_str();
        let spec = &table.properties["TimeToLiveSpecification"];
        if kept.contains_key(id) {
            assert!(spec.is_null(), "{id}: {}", kept[id]);
            continue;
        }
        assert_eq!(
            spec["AttributeName"].as_str(),
            Some(strata_dynamo::TTL),
            "{id}: TTL on the attribute the code writes (or a reason in KEPT_FOR_GOOD)"
        );
        assert_eq!(spec["Enabled"].as_bool(), Some(true), "{id}: TTL enabled");
    }
    // The tables of idempotency and exactly-once records among them.
    for id in ["IdempotencyTable", "LedgerTable", "CounterLogTable"] {
        assert!(
            !kept.contains_key(id) && t.tables().iter().any(|table| table.logical_id == id),
            "{id}"
        );
    }
}
