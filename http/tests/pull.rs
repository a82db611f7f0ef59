//! The pull loop's writes (`HttpSource::send`) against a fake server: what
//! is retried and what is returned as it came, by method.

// Tests unwrap: a failure is a failed test that names its line.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use catalog_http::{HttpSource, RetryPolicy, SourceError};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn source() -> HttpSource {
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        max_wait: Duration::from_secs(1),
    };
    HttpSource::new(HeaderMap::new(), Duration::from_secs(5), policy).unwrap()
}

async fn n_requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn a_post_answered_with_a_5xx_is_not_sent_again_since_it_may_have_taken_effect() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(502)).mount(&server).await;
    let answer = source().send(Method::POST, &format!("{}/repos", server.uri()), Some(&json!({}))).await.unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(n_requests(&server).await, 1);
}

#[tokio::test]
async fn an_idempotent_request_answered_with_a_5xx_is_retried_and_the_last_answer_returned() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let answer = source().send(Method::PUT, &format!("{}/topics", server.uri()), Some(&json!({}))).await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(n_requests(&server).await, 3);
}

#[tokio::test]
async fn a_rate_limited_post_waits_and_is_sent_again_since_it_did_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sha": "abc"})))
        .mount(&server)
        .await;
    let answer = source().send(Method::POST, &format!("{}/blobs", server.uri()), Some(&json!({}))).await.unwrap();
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap()["sha"], "abc");
    assert_eq!(n_requests(&server).await, 2);
}

#[tokio::test]
async fn a_refusal_is_returned_with_its_body_for_the_caller_to_explain() {
    let server = MockServer::start().await;
    let refusal = json!({"message": "Validation Failed"});
    Mock::given(method("POST"))
        .and(path("/orgs/acme/repos"))
        .respond_with(ResponseTemplate::new(422).set_body_json(refusal.clone()))
        .mount(&server)
        .await;
    let url = format!("{}/orgs/acme/repos", server.uri());
    let answer = source().send(Method::POST, &url, Some(&json!({"name": "x"}))).await.unwrap();
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap(), refusal);
    assert_eq!(n_requests(&server).await, 1);
}

#[tokio::test]
async fn a_read_that_keeps_failing_is_unavailable_after_its_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let url = format!("{}/orgs/acme/repos", server.uri());
    let error = source().get(&url).await.unwrap_err();
    assert_eq!(
        error,
        SourceError::Unavailable {
            message: format!("{url}: 500 Internal Server Error (after 3 attempts)"),
            retry_after: None
        }
    );
}
