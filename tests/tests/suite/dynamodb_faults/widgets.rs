//! Widgets: a create whose answer was lost answers 201, not a duplicate.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_create_whose_answer_was_lost_answers_201_not_duplicate() {
    let t = setup().await;
    let app = t.app();
    lose_next(&t, "PutItem").await;
    let r = app
        .post(
            "/widgets",
            json!({"serial_number": "W1", "name": "one", "ports": ["P", "R"]}),
        )
        .await;
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 1);
    let widget = json!({"serial_number": "W1", "name": "one", "ports": ["P", "R"], "associations": [], "free": {"P": 1, "R": 1, "Q": 0}});
    assert_eq!((r.status, &r.body), (StatusCode::CREATED, &widget));
    let got = app.get("/widgets/W1").await;
    assert_eq!((got.status, &got.body), (StatusCode::OK, &widget));
    // A second create of the same serial is still a duplicate.
    let again = app
        .post(
            "/widgets",
            json!({"serial_number": "W1", "name": "one", "ports": ["P", "R"]}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
}
