//! The one place that decides how the catalog talks to HTTP services:
//! timeouts, retries with backoff and jitter, rate limits (GitHub's
//! `x-ratelimit-remaining`/`x-ratelimit-reset`, `retry-after`, PagerDuty's
//! `ratelimit-reset`), conditional requests with ETag and pagination (GitHub's
//! `Link` headers, PagerDuty's offsets). The HTTP client's
//! own retries are never used, so what happens on each fault is decided
//! here and testable. Readers (`get` and its pages) get classified errors;
//! writers (`send`) get the final answer and classify it themselves, since
//! only they know what a 422 means to their user. Callers add only their
//! wire types and mappings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

/// How hard to try before a fetch fails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Tries per request, the first included.
    pub max_attempts: u32,
    /// The first backoff after a transient failure; it doubles per attempt.
    pub base_delay: Duration,
    /// The longest backoff between two attempts.
    pub max_delay: Duration,
    /// The longest a rate limit may make one request wait. Past it the
    /// fetch fails as unavailable (with when to come back) instead of
    /// holding the provider's run: the scheduler never blocks on a long wait.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// Why a fetch failed, classified because the engine acts on the class.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// 5xx, 429, a rate limit, a network error or a timeout: keep the data,
    /// try again later (`retry_after` when the source said when).
    #[error("unavailable: {message}")]
    Unavailable { message: String, retry_after: Option<Duration> },
    /// 401, or 403 that is not a rate limit: the configuration or the
    /// credentials are wrong. Keep the data, surface the error.
    #[error("unauthorized: {message}")]
    Unauthorized { message: String },
    /// 404: the thing is not there (a real removal for a catalog file).
    #[error("not found")]
    NotFound,
    /// 409: the request conflicts with the resource's state (GitHub's
    /// answer for the git tree of an empty repository).
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// A response that cannot be what was asked for (malformed JSON, an
    /// unexpected status).
    #[error("invalid response: {message}")]
    Invalid { message: String },
}

/// A successful response: its body and headers.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub body: bytes::Bytes,
    pub headers: HeaderMap,
}

/// The final answer to a request sent with [`HttpSource::send`], whatever
/// its status: what to make of a 404 or a 422 is the caller's to say.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// Tries it took, the first included.
    attempts: u32,
}

/// An HTTP source: one client, one retry policy, one ETag cache.
pub struct HttpSource {
    client: reqwest::Client,
    policy: RetryPolicy,
    /// The last body and ETag per URL: a 304 answers from here (and, on
    /// GitHub, costs no rate limit).
    etags: Mutex<HashMap<String, (HeaderValue, Fetched)>>,
    /// Until when the source said to stop (a rate limit longer than
    /// `max_wait`): fetches fail at once instead of spending requests
    /// against a spent quota, which GitHub penalises.
    blocked_until: Mutex<Option<Instant>>,
    /// Where the bearer token comes from when it changes over time; None:
    /// the default headers carry the credentials, if any.
    tokens: Option<Arc<dyn TokenSource>>,
}

/// A bearer token that changes over time (a GitHub App's installation
/// tokens): asked for before each request.
pub(crate) trait TokenSource: Send + Sync {
    fn token(&self) -> BoxFuture<'_, Result<String, SourceError>>;
    /// The source refused the last token (401): the next call gets a new one.
    fn refused(&self) -> BoxFuture<'_, ()>;
}

/// The most URLs whose ETag is kept; past it the cache starts over.
const MAX_ETAGS: usize = 50_000;

impl HttpSource {
    /// `headers` go with every request (authorization, accept, user agent).
    pub fn new(headers: HeaderMap, timeout: Duration, policy: RetryPolicy) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // Redirects would carry the credentials to wherever they point.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client, policy, etags: Mutex::default(), blocked_until: Mutex::default(), tokens: None })
    }

    /// Sends `tokens`' current token with every request.
    pub(crate) fn with_tokens(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// GETs `url`, retrying transient failures and waiting out short rate
    /// limits as the policy says.
    pub async fn get(&self, url: &str) -> Result<Fetched, SourceError> {
        let answer = self.exchange(&Method::GET, url, None).await?;
        let status = answer.status;
        if status.is_success() {
            return Ok(Fetched { body: answer.body, headers: answer.headers });
        }
        let attempts = answer.attempts;
        Err(match status {
            // Only what the retries gave up on reaches here as 5xx or as a
            // refused token.
            status if status.is_server_error() => SourceError::Unavailable {
                message: format!("{url}: {status} (after {attempts} attempts)"),
                retry_after: None,
            },
            StatusCode::UNAUTHORIZED if self.tokens.is_some() => SourceError::Unavailable {
                message: format!("{url}: {status}: the token was refused (after {attempts} attempts)"),
                retry_after: None,
            },
            StatusCode::NOT_FOUND => SourceError::NotFound,
            StatusCode::CONFLICT => SourceError::Conflict { message: format!("{url}: {status}") },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                SourceError::Unauthorized { message: format!("{url}: {status}") }
            }
            status => SourceError::Invalid { message: format!("{url}: unexpected status {status}") },
        })
    }

    /// Sends a request (with `body` as JSON) and returns its final answer,
    /// whatever the status. Retries what cannot have taken effect (a rate
    /// limit, a refused token) for every method, and a network failure or
    /// 5xx only for idempotent methods: a POST that timed out may have
    /// created what it asked for. An error only when there is no answer to
    /// give (unreachable, rate limited past the policy's wait).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, SourceError> {
        self.exchange(&method, url, body).await
    }

    /// One request with the policy's retries: the last answer, or why there is none.
    async fn exchange(
        &self,
        method: &Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, SourceError> {
        let blocked = *self.blocked_until.lock();
        if let Some(until) = blocked
            && let Some(left) = until.checked_duration_since(Instant::now())
        {
            return Err(SourceError::Unavailable {
                message: format!("{url}: not sent, the source is rate limited for {} s more", left.as_secs()),
                retry_after: Some(left),
            });
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let exhausted = attempt >= self.policy.max_attempts;
            let wait = match self.try_once(method, url, body).await {
                Ok(mut answer) => {
                    answer.attempts = attempt;
                    return Ok(answer);
                }
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retryable { answer: Some(mut answer), .. }) if exhausted => {
                    answer.attempts = attempt;
                    return Ok(answer);
                }
                Err(Failure::Retryable { message, .. }) => {
                    if exhausted {
                        return Err(SourceError::Unavailable {
                            message: format!("{message} (after {attempt} attempts)"),
                            retry_after: None,
                        });
                    }
                    backoff(&self.policy, attempt)
                }
                Err(Failure::RateLimited { message, wait }) => {
                    if wait > self.policy.max_wait {
                        *self.blocked_until.lock() = Some(Instant::now() + wait);
                    }
                    if wait > self.policy.max_wait || exhausted {
                        return Err(SourceError::Unavailable { message, retry_after: Some(wait) });
                    }
                    wait + jitter(self.policy.base_delay)
                }
            };
            tracing::debug!(url, attempt, wait_ms = wait.as_millis() as u64, "retrying a request");
            tokio::time::sleep(wait).await;
        }
    }

    /// GETs `url` and parses its JSON body.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<(T, HeaderMap), SourceError> {
        let fetched = self.get(url).await?;
        let value = serde_json::from_slice(&fetched.body)
            .map_err(|error| SourceError::Invalid { message: format!("{url}: malformed JSON: {error}") })?;
        Ok((value, fetched.headers))
    }

    /// Every page of a JSON list, following `Link: <...>; rel="next"` (RFC
    /// 8288, as GitHub pages). A page that fails fails the whole list: a
    /// list with a page missing is not the list.
    pub async fn get_all_pages<T: DeserializeOwned>(&self, first: &str) -> Result<Vec<T>, SourceError> {
        let mut items = Vec::new();
        let mut next = Some(first.to_owned());
        let mut n_pages = 0;
        while let Some(url) = next {
            n_pages += 1;
            if n_pages > MAX_PAGES {
                return Err(SourceError::Invalid { message: format!("{first}: more than {MAX_PAGES} pages") });
            }
            let (page, headers) = self.get_json::<Vec<T>>(&url).await?;
            items.extend(page);
            next = headers.get("link").and_then(|value| value.to_str().ok()).and_then(next_link);
            // The token goes with every request: never to another origin.
            if let Some(next) = &next
                && origin(next) != origin(first)
            {
                return Err(SourceError::Invalid {
                    message: format!("{first}: the next page is on another host: {next}"),
                });
            }
        }
        Ok(items)
    }

    /// Every item of an offset-paged JSON list, as PagerDuty pages: each page
    /// is an object holding the items under `items_key` and `more`; `limit`
    /// and `offset` are added to `url`'s query. A page that fails fails the
    /// whole list, like [`HttpSource::get_all_pages`].
    pub async fn get_offset_pages<T: DeserializeOwned>(
        &self,
        url: &str,
        items_key: &str,
        limit: usize,
    ) -> Result<Vec<T>, SourceError> {
        let limit = limit.max(1);
        let base = reqwest::Url::parse(url)
            .map_err(|error| SourceError::Invalid { message: format!("{url}: not a URL: {error}") })?;
        let mut items = Vec::new();
        for n_page in 0..MAX_PAGES {
            let mut page_url = base.clone();
            page_url
                .query_pairs_mut()
                .append_pair("limit", &limit.to_string())
                .append_pair("offset", &(n_page * limit).to_string());
            let (mut page, _) = self.get_json::<serde_json::Value>(page_url.as_str()).await?;
            let invalid = |what: &str| SourceError::Invalid { message: format!("{page_url}: {what}") };
            let serde_json::Value::Array(listed) = page[items_key].take() else {
                return Err(invalid(&format!("the page has no {items_key} list")));
            };
            let n_listed = listed.len();
            for item in listed {
                items.push(
                    serde_json::from_value(item)
                        .map_err(|error| invalid(&format!("an item of {items_key}: {error}")))?,
                );
            }
            if !page["more"].as_bool().unwrap_or(false) {
                return Ok(items);
            }
            // `more` on an empty page would page forever.
            if n_listed == 0 {
                return Err(invalid("an empty page says there is more"));
            }
        }
        Err(SourceError::Invalid { message: format!("{url}: more than {MAX_PAGES} pages") })
    }

    /// One try: the answer, or whether and when to try again.
    async fn try_once(&self, method: &Method, url: &str, body: Option<&serde_json::Value>) -> Result<Answer, Failure> {
        // Whether a request that got no answer, or a 5xx, may be sent again.
        let repeatable = method.is_idempotent();
        let cached = if *method == Method::GET { self.etags.lock().get(url).cloned() } else { None };
        let mut request = self.client.request(method.clone(), url);
        if let Some(tokens) = &self.tokens {
            let token = tokens.token().await.map_err(|error| match error {
                SourceError::Unavailable { message, .. } => Failure::Retryable { message, answer: None },
                error => Failure::Final(error),
            })?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Failure::Final(SourceError::Invalid { message: "the token is not a valid header value".into() })
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        if let Some((etag, _)) = &cached {
            request = request.header(IF_NONE_MATCH, etag.clone());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut trace = HeaderMap::new();
        crate::trace::inject(&mut trace);
        request = request.headers(trace);
        let unanswered = |error: &reqwest::Error| {
            let message = describe(url, error);
            if repeatable {
                Failure::Retryable { message, answer: None }
            } else {
                Failure::Final(SourceError::Unavailable { message, retry_after: None })
            }
        };
        let response = request.send().await.map_err(|error| unanswered(&error))?;
        let status = response.status();
        let headers = response.headers().clone();
        if status == StatusCode::NOT_MODIFIED
            && let Some((_, fetched)) = cached
        {
            return Ok(Answer { status: StatusCode::OK, headers: fetched.headers, body: fetched.body, attempts: 0 });
        }
        if status.is_success() {
            // A body cut short is a transient failure, like the connection dropping.
            let body = response.bytes().await.map_err(|error| unanswered(&error))?;
            if *method == Method::GET
                && let Some(etag) = headers.get(ETAG)
            {
                let mut etags = self.etags.lock();
                if etags.len() >= MAX_ETAGS {
                    etags.clear();
                }
                let fetched = Fetched { body: body.clone(), headers: headers.clone() };
                etags.insert(url.to_owned(), (etag.clone(), fetched));
            }
            return Ok(Answer { status, headers, body, attempts: 0 });
        }
        if let Some(wait) = rate_limit_wait(status, &headers) {
            return Err(Failure::RateLimited { message: format!("{url}: rate limited ({status})"), wait });
        }
        // What a refusal says is the caller's; a body that cannot be read says nothing.
        let body = response.bytes().await.unwrap_or_default();
        // GitHub's secondary limits sometimes come as a bare 403 that says
        // so only in its message.
        if status == StatusCode::FORBIDDEN && String::from_utf8_lossy(&body).to_lowercase().contains("rate limit") {
            return Err(Failure::RateLimited {
                message: format!("{url}: rate limited ({status})"),
                wait: SECONDARY_LIMIT_WAIT,
            });
        }
        let answer = Answer { status, headers, body, attempts: 0 };
        if status == StatusCode::UNAUTHORIZED
            && let Some(tokens) = &self.tokens
        {
            // Revoked or expired early: the retry asks for a new token. A
            // refused request did nothing, whatever its method.
            tokens.refused().await;
            return Err(Failure::Retryable {
                message: format!("{url}: {status}: the token was refused"),
                answer: Some(answer),
            });
        }
        if status.is_server_error() && repeatable {
            return Err(Failure::Retryable { message: format!("{url}: {status}"), answer: Some(answer) });
        }
        Ok(answer)
    }
}

/// How long a rate limit without a hint makes a source wait, as GitHub asks.
const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Scheme, host and port of a URL (None when it does not parse).
fn origin(url: &str) -> Option<(String, String, Option<u16>)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    Some((parsed.scheme().to_owned(), parsed.host_str()?.to_owned(), parsed.port_or_known_default()))
}

/// The most pages one list may take (at 100 a page, 100,000 items).
const MAX_PAGES: usize = 1_000;

/// The `rel="next"` URL of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|param| param.trim() == r#"rel="next""#)
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

/// Why one try did not end the exchange.
enum Failure {
    /// Worth another try (a network failure, a 5xx, a refused token);
    /// `answer` is returned as it is when the tries run out, if there was one.
    Retryable {
        message: String,
        answer: Option<Answer>,
    },
    RateLimited {
        message: String,
        wait: Duration,
    },
    Final(SourceError),
}

/// How long a rate-limited response says to wait; None when it is not one.
/// 429 always is; 403 is when GitHub says the quota is spent
/// (`x-ratelimit-remaining: 0`) or asks for a pause (`retry-after`, its
/// secondary limits). Without a hint, at least 60 s, as GitHub asks.
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let number = |name: &str| header(name).and_then(|value| value.parse::<u64>().ok());
    let spent = header("x-ratelimit-remaining") == Some("0");
    let retry_after = number(RETRY_AFTER.as_str());
    let limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (spent || retry_after.is_some()));
    if !limited {
        return None;
    }
    if let Some(seconds) = retry_after {
        return Some(Duration::from_secs(seconds));
    }
    if spent && let Some(reset) = number("x-ratelimit-reset") {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now)));
    }
    // PagerDuty: seconds until the window resets.
    if let Some(seconds) = number("ratelimit-reset") {
        return Some(Duration::from_secs(seconds));
    }
    Some(SECONDARY_LIMIT_WAIT)
}

/// Exponential backoff with jitter: base × 2^(attempt-1), capped, plus up
/// to one base of jitter so that many providers do not retry in step.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exponential = policy.base_delay.saturating_mul(1 << (attempt - 1).min(16));
    exponential.min(policy.max_delay) + jitter(policy.base_delay)
}

/// A pseudo-random duration below `bound`, from the clock: retries need
/// spreading, not unpredictability.
fn jitter(bound: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let bound_nanos = bound.as_nanos().max(1);
    Duration::from_nanos((u128::from(nanos) % bound_nanos) as u64)
}

fn describe(url: &str, error: &reqwest::Error) -> String {
    // reqwest's messages name the URL; its source says what went wrong.
    let cause = std::error::Error::source(error).map(ToString::to_string).unwrap_or_default();
    let kind = if error.is_timeout() { "timed out" } else { "request failed" };
    if cause.is_empty() { format!("{url}: {kind}") } else { format!("{url}: {kind}: {cause}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (reqwest::header::HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn the_next_link_is_read_from_githubs_link_header() {
        let header = r#"<https://api.github.com/organizations/1/repos?per_page=100&page=2>; rel="next", <https://api.github.com/organizations/1/repos?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some("https://api.github.com/organizations/1/repos?per_page=100&page=2")
        );
        let last = r#"<https://api.github.com/organizations/1/repos?page=4>; rel="prev", <https://api.github.com/organizations/1/repos?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
    }

    #[test]
    fn a_spent_github_quota_waits_until_its_reset() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let spent = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &(now + 120).to_string())]);
        let wait = rate_limit_wait(StatusCode::FORBIDDEN, &spent).unwrap();
        assert!((119..=120).contains(&wait.as_secs()), "{wait:?}");
    }

    #[test]
    fn retry_after_wins_and_a_bare_secondary_limit_waits_a_minute() {
        let asked = headers(&[("retry-after", "7")]);
        assert_eq!(rate_limit_wait(StatusCode::FORBIDDEN, &asked), Some(Duration::from_secs(7)));
        assert_eq!(rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()), Some(Duration::from_secs(60)));
        let pagerduty = headers(&[("ratelimit-reset", "3")]);
        assert_eq!(rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &pagerduty), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_plain_403_is_not_a_rate_limit() {
        let remaining = headers(&[("x-ratelimit-remaining", "4999")]);
        assert_eq!(rate_limit_wait(StatusCode::FORBIDDEN, &remaining), None);
        assert_eq!(rate_limit_wait(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new()), None);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_plus_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            max_wait: Duration::from_secs(1),
        };
        let first = backoff(&policy, 1);
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(200), "{first:?}");
        let third = backoff(&policy, 3);
        assert!(third >= Duration::from_millis(350) && third < Duration::from_millis(450), "{third:?}");
    }
}
