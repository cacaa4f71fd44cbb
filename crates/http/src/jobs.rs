//! The job API, under `/v1` (its document: `/v1/openapi.json`, checked in
//! as `crates/http/openapi.json`):
//!
//! - `POST /v1/jobs/{capability}`: runs a job. A JSON body is its input; a
//!   `multipart/form-data` body holds an optional `input` part (JSON) and
//!   files (input blobs, in order); any other body is one input blob
//!   (`?name=` names it). Query parameters `timeout` (seconds), `retries`,
//!   `priority`, `strategy`, `affinity` and `retry_on_disconnect` set its
//!   options; any other parameter becomes a field of the input (`?width=256`,
//!   like `peer submit --param`). It waits and answers the envelope as JSON,
//!   or the first result blob itself when the request sent a blob and
//!   accepts anything, or when `Accept` names the blob's type.
//!   `?detach=true` (or `Prefer: respond-async`): `202` with the job id once
//!   it is journaled. A client that disconnects while it waits cancels the
//!   job, as on the control socket.
//! - `GET /v1/jobs/{id}`: where a job stands, or its envelope;
//!   `GET /v1/jobs/{id}/events`: its events as server-sent events;
//!   `DELETE /v1/jobs/{id}`: cancel; `GET /v1/jobs/{id}/blobs/{name}`: a
//!   kept result blob, by name or index.
//!
//! Errors are JSON, `{"error": CODE, "message": …}` with a stable code; a
//! job that ended without a result answers its envelope, whose `status` is
//! the code, with the status of [`status_code`].

use std::path::Path;

use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, FromRequest, Multipart, Path as UrlPath, Query, Request, State,
};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{Stream, StreamExt};
use jobmesh_peer::envelope::{add_param, BlobInfo, Envelope, SubmitOptions};
use jobmesh_peer::store::StoredJob;
use jobmesh_peer::{Blob, JobReport, PeerHandle, ReceivedBlob};
use jobmesh_wire::dc::JobId;
use jobmesh_wire::Capability;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::{ApiError, Shared};

/// Largest JSON input (a body, or a multipart `input` part), in bytes.
pub const MAX_JSON_INPUT: usize = 1024 * 1024;
/// Jobs whose uploaded files a daemon holds at once (streaming in, or
/// waiting for their job to end). Past it a request with files gets 429:
/// the disk they take is bounded by this times the blob limit.
pub const MAX_UPLOADS: usize = 64;
/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub(crate) fn routes() -> Router<Shared> {
    // One path for both: `POST /v1/jobs/{capability}` and
    // `GET|DELETE /v1/jobs/{id}` (OpenAPI, like the router, allows one
    // template per path: it is `{target}` there).
    Router::new()
        .route(
            "/v1/jobs/{target}",
            // Bodies are streamed to files under the blob limits, not
            // buffered: no framework-wide body limit here.
            post(submit)
                .layer(DefaultBodyLimit::disable())
                .get(job)
                .delete(cancel),
        )
        .route("/v1/jobs/{target}/events", get(events))
        .route("/v1/jobs/{target}/blobs/{name}", get(blob))
        .route("/v1/openapi.json", get(openapi))
}

/// The HTTP status of a job's envelope `status`.
pub fn status_code(status: &str) -> StatusCode {
    match status {
        "completed" => StatusCode::OK,
        "submitted" => StatusCode::ACCEPTED,
        "rejected" => StatusCode::BAD_REQUEST,
        "cancelled" => StatusCode::CONFLICT,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "queue_full" => StatusCode::TOO_MANY_REQUESTS,
        "lost" => StatusCode::BAD_GATEWAY,
        "no_worker" | "unreachable" => StatusCode::SERVICE_UNAVAILABLE,
        "timed_out" => StatusCode::GATEWAY_TIMEOUT,
        // "failed": the job ran and its handler failed.
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn too_large(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
}

fn daemon_error(e: &jobmesh_peer::DaemonError) -> ApiError {
    use jobmesh_peer::DaemonError as E;
    match e {
        E::Blobs(m) => bad("bad_blob", m.clone()),
        E::NoJournal => ApiError::new(
            StatusCode::CONFLICT,
            "no_journal",
            "this daemon keeps no journal, so it cannot run detached jobs or keep results (start it with a data dir)",
        ),
        E::Journal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "journal", m.clone()),
        other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopped", other.to_string()),
    }
}

/// What a submit asked for, besides its input.
struct Asked {
    options: SubmitOptions,
    detach: bool,
    /// The name of a raw body's blob.
    name: Option<String>,
}

/// The options among `pairs`; the other pairs become fields of `input`.
fn asked(pairs: &[(String, String)], input: &mut serde_json::Value) -> Result<Asked, ApiError> {
    let mut a = Asked {
        options: SubmitOptions::default(),
        detach: false,
        name: None,
    };
    for (k, v) in pairs {
        let invalid = |why: &str| bad("bad_parameter", format!("{k}={v}: {why}"));
        match k.as_str() {
            "timeout" => {
                let secs: f64 = v.parse().map_err(|_| invalid("seconds, e.g. 30 or 0.5"))?;
                if !(secs > 0.0 && secs.is_finite()) {
                    return Err(invalid("must be more than 0 seconds"));
                }
                a.options.timeout_ms = Some((secs * 1000.0).ceil().min(u64::MAX as f64) as u64);
            }
            "retries" => {
                a.options.retries = Some(v.parse().map_err(|_| invalid("a count, 0 or more"))?)
            }
            "priority" => {
                a.options.priority =
                    Some(v.parse().map_err(|_| invalid("an integer, higher first"))?)
            }
            "strategy" if v == "custom" => {
                return Err(invalid(
                    "a custom strategy is written in Rust, in the library",
                ))
            }
            "strategy" => a.options.strategy = Some(v.clone()),
            "affinity" => a.options.affinity = Some(v.clone()),
            "retry_on_disconnect" => {
                a.options.retry_on_disconnect =
                    Some(flag(v).ok_or_else(|| invalid("true or false"))?)
            }
            "detach" => a.detach = flag(v).ok_or_else(|| invalid("true or false"))?,
            "name" => a.name = Some(v.clone()),
            _ => add_param(input, k, v).map_err(|e| bad("bad_parameter", format!("{k}: {e}")))?,
        }
    }
    Ok(a)
}

fn flag(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// Whether `headers` carry a JSON content type.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Writes `chunks` to a new file in `dir`, refusing more than `limit`
/// bytes; the file (removed when the returned path is dropped) and its size.
async fn save_upload<S, E>(
    dir: &Path,
    mut chunks: S,
    limit: u64,
    what: &str,
) -> Result<(TempPath, u64), ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let spool = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "spool",
            format!(
                "cannot write {what} to the spool dir {}: {e}",
                dir.display()
            ),
        )
    };
    let (file, path) = tempfile::Builder::new()
        .prefix("http-upload-")
        .tempfile_in(dir)
        .map_err(spool)?
        .into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut size: u64 = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| bad("bad_body", format!("{what}: the body broke off: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(format!(
                "{what} is larger than this daemon's blob limit of {limit} bytes (peer --max-blob-mib)"
            )));
        }
        file.write_all(&chunk).await.map_err(spool)?;
    }
    file.flush().await.map_err(spool)?;
    Ok((path, size))
}

/// The input and blobs a submit's body holds.
struct Inputs {
    input: serde_json::Value,
    blobs: Vec<Blob>,
    /// The files behind `blobs`, removed when the job no longer needs them.
    uploads: Uploads,
}

/// Uploaded files and their place among [`MAX_UPLOADS`]; dropping it
/// removes the files and frees the place.
#[derive(Default)]
struct Uploads {
    files: Vec<TempPath>,
    _place: Option<OwnedSemaphorePermit>,
}

impl Uploads {
    /// A place for a request's uploads, if one of [`MAX_UPLOADS`] is free.
    fn place(s: &Shared) -> Result<Self, ApiError> {
        let place = s.uploads.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                format!("{MAX_UPLOADS} jobs with uploaded files are running or queued on this daemon; retry when one ends"),
            )
        })?;
        Ok(Self {
            files: Vec::new(),
            _place: Some(place),
        })
    }
}

async fn read_json(body: Body, what: &str) -> Result<serde_json::Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_INPUT)
        .await
        .map_err(|_| too_large(format!("{what} is larger than {MAX_JSON_INPUT} bytes")))?;
    parse_json(&bytes, what)
}

/// `bytes` as JSON; nothing at all is `{}`.
fn parse_json(bytes: &[u8], what: &str) -> Result<serde_json::Value, ApiError> {
    if bytes.is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_slice(bytes).map_err(|e| bad("bad_json", format!("{what} is not JSON: {e}")))
}

async fn read_body(
    s: &Shared,
    headers: &HeaderMap,
    req: Request,
    name: Option<String>,
) -> Result<Inputs, ApiError> {
    let kind = content_type(headers).to_owned();
    let limit = s.handle.max_blob_size();
    let dir = s.handle.spool_dir().to_owned();
    if is_json(&kind) {
        let input = read_json(req.into_body(), "the JSON body").await?;
        return Ok(Inputs {
            input,
            blobs: Vec::new(),
            uploads: Uploads::default(),
        });
    }
    if kind.to_ascii_lowercase().starts_with("multipart/form-data") {
        let mut parts = Multipart::from_request(req, &())
            .await
            .map_err(|e| bad("bad_multipart", e.body_text()))?;
        let mut input = serde_json::json!({});
        let (mut blobs, mut uploads) = (Vec::new(), Uploads::place(s)?);
        loop {
            let field = match parts.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(bad("bad_multipart", e.body_text())),
            };
            let field_name = field.name().unwrap_or("").to_owned();
            if field_name == "input" && field.file_name().is_none() {
                let what = "the multipart `input` part";
                let mut field = field;
                let mut bytes = Vec::new();
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| bad("bad_multipart", e.body_text()))?
                {
                    if bytes.len() + chunk.len() > MAX_JSON_INPUT {
                        return Err(too_large(format!(
                            "{what} is larger than {MAX_JSON_INPUT} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                input = parse_json(&bytes, what)?;
                continue;
            }
            if blobs.len() == jobmesh_wire::blob::MAX_BLOBS_PER_JOB {
                return Err(bad(
                    "too_many_blobs",
                    format!(
                        "at most {} files a job",
                        jobmesh_wire::blob::MAX_BLOBS_PER_JOB
                    ),
                ));
            }
            let name = field.file_name().map(str::to_owned).unwrap_or(field_name);
            let what = format!("the file {name:?}");
            let (path, _) = save_upload(&dir, field, limit, &what).await?;
            blobs.push(Blob::from_file(path.to_path_buf()).with_name(name));
            uploads.files.push(path);
        }
        return Ok(Inputs {
            input,
            blobs,
            uploads,
        });
    }
    // Any other body is one blob (curl --data-binary sends
    // application/x-www-form-urlencoded, which is taken as bytes too).
    let mut uploads = Uploads::place(s)?;
    let (path, size) =
        save_upload(&dir, req.into_body().into_data_stream(), limit, "the body").await?;
    if size == 0 {
        // No body: no blob (and no place taken).
        return Ok(Inputs {
            input: serde_json::json!({}),
            blobs: Vec::new(),
            uploads: Uploads::default(),
        });
    }
    let name = name.unwrap_or_else(|| "input".into());
    let blobs = vec![Blob::from_file(path.to_path_buf()).with_name(name)];
    uploads.files.push(path);
    Ok(Inputs {
        input: serde_json::json!({}),
        blobs,
        uploads,
    })
}

/// Cancels its job when dropped armed: the client went away.
struct CancelOnDrop {
    handle: PeerHandle,
    job_id: Option<JobId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(job_id) = self.job_id.take() {
            let handle = self.handle.clone();
            debug!(%job_id, "HTTP client left; cancelling its job");
            tokio::spawn(async move {
                handle.cancel(job_id).await;
            });
        }
    }
}

async fn submit(
    State(s): State<Shared>,
    UrlPath(capability): UrlPath<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let capability =
        Capability::new(&capability).map_err(|e| bad("bad_capability", e.to_string()))?;
    // Options are read before the body, so a bad one costs no upload.
    let mut fields = serde_json::json!({});
    let asked = asked(&pairs, &mut fields)?;
    let options = asked
        .options
        .to_options()
        .map_err(|e| bad("bad_parameter", e))?;
    let prefer_async = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        });
    let detach = asked.detach || prefer_async;
    if detach && !s.handle.keeps_journal() {
        return Err(daemon_error(&jobmesh_peer::DaemonError::NoJournal));
    }
    let mut body = read_body(&s, &headers, req, asked.name).await?;
    if let serde_json::Value::Object(extra) = fields {
        for (k, v) in extra {
            match &mut body.input {
                serde_json::Value::Object(obj) => {
                    obj.insert(k, v);
                }
                _ => {
                    return Err(bad(
                        "bad_parameter",
                        format!(
                            "?{k}= adds a field to the input, so the input must be a JSON object"
                        ),
                    ))
                }
            }
        }
    }
    let sent_blob = !body.blobs.is_empty();
    let job = s
        .handle
        .submit_job(capability.clone(), body.input, body.blobs, options, false)
        .await;
    let mut job = job.map_err(|e| daemon_error(&e))?;
    let job_id = job.id();
    debug!(%job_id, %capability, detach, "job submitted over HTTP");
    if detach {
        if let Some(ended) = job.ended_at_once() {
            return Ok(envelope_response(&ended.map_err(|e| daemon_error(&e))?));
        }
        // The uploads live until the job ends; the job runs on without us.
        let uploads = body.uploads;
        tokio::spawn(async move {
            let _ = job.result().await;
            drop(uploads);
        });
        let mut r = (
            StatusCode::ACCEPTED,
            axum::Json(Envelope::submitted(job_id)),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{job_id}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    let mut guard = CancelOnDrop {
        handle: s.handle.clone(),
        job_id: Some(job_id),
    };
    let report = job.result().await;
    guard.job_id = None;
    drop(body.uploads);
    let report = report.map_err(|e| daemon_error(&e))?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    Ok(match report.blobs.first() {
        Some(first)
            if report.result.is_ok() && wants_blob(accept, sent_blob, &media_type(first)) =>
        {
            blob_response(first, &report).await?
        }
        _ => envelope_response(&report),
    })
}

/// Whether a client that accepts `accept` gets the result blob of type
/// `kind` rather than the envelope: when it names that type (or its
/// family), or accepts anything and sent a blob itself.
fn wants_blob(accept: &str, sent_blob: bool, kind: &str) -> bool {
    let ranges: Vec<&str> = accept
        .split(',')
        .map(|r| r.split(';').next().unwrap_or("").trim())
        .collect();
    if ranges.iter().any(|r| is_json(r)) {
        return false;
    }
    let family = kind.split('/').next().unwrap_or("");
    ranges.iter().any(|r| {
        r.eq_ignore_ascii_case(kind)
            || r.strip_suffix("/*")
                .is_some_and(|f| f != "*" && f.eq_ignore_ascii_case(family))
            || (*r == "*/*" && sent_blob)
    })
}

/// The media type of `blob`, from its first bytes.
fn media_type(blob: &ReceivedBlob) -> String {
    match (blob.bytes(), blob.path()) {
        (Some(b), _) => sniff(b),
        (None, Some(p)) => sniff_file(p),
        (None, None) => sniff(&[]),
    }
}

fn sniff(head: &[u8]) -> String {
    infer::get(head).map_or_else(
        || "application/octet-stream".to_owned(),
        |t| t.mime_type().to_owned(),
    )
}

fn sniff_file(path: &Path) -> String {
    let mut head = vec![0; 512];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    head.truncate(n);
    sniff(&head)
}

fn blob_infos(blobs: &[ReceivedBlob]) -> Vec<BlobInfo> {
    blobs
        .iter()
        .map(|b| BlobInfo {
            index: b.meta().index,
            name: b.name().map(str::to_owned),
            size: b.size(),
            blake3: b.meta().blake3.clone(),
            saved_to: None,
        })
        .collect()
}

fn envelope_response(report: &JobReport) -> Response {
    let mut e = Envelope::from_report(report);
    e.blobs = blob_infos(&report.blobs);
    (status_code(&e.status), axum::Json(e)).into_response()
}

/// The first result blob as the response body; the job in headers.
async fn blob_response(blob: &ReceivedBlob, report: &JobReport) -> Result<Response, ApiError> {
    let body = match (blob.bytes(), blob.path()) {
        (Some(b), _) => Body::from(b.clone()),
        (None, Some(p)) => {
            let f = tokio::fs::File::open(p).await.map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "spool",
                    format!("the result blob is unreadable: {e}"),
                )
            })?;
            Body::from_stream(tokio_util::io::ReaderStream::new(f))
        }
        (None, None) => Body::empty(),
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    set(h, "content-type", media_type(blob));
    set(h, "content-length", blob.size().to_string());
    set(h, "jobmesh-job-id", report.job_id.to_string());
    set(h, "jobmesh-blob-blake3", blob.meta().blake3.clone());
    if let Some((_, name)) = &report.worker {
        set(h, "jobmesh-worker", name.clone());
    }
    if let Ok(result) = &report.result {
        set(h, "jobmesh-result", result.to_string());
    }
    Ok(r)
}

fn job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| bad("bad_job_id", format!("{raw:?} is not a job id (a UUID)")))
}

fn unknown(job_id: JobId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_job",
        format!("no job {job_id} on this daemon: not submitted here, or its result expired"),
    )
}

/// Whether `job_id` is live (not ended) on this daemon.
async fn live(s: &Shared, job_id: JobId) -> Option<jobmesh_peer::jobs::JobRecord> {
    let jobs = s.handle.jobs().await.ok()?;
    jobs.into_iter().find(|j| {
        j.job_id == job_id && matches!(j.state.as_str(), "queued" | "dispatched" | "running")
    })
}

/// The journal's record of an ended job (its envelope), or why there is none.
async fn ended_envelope(s: &Shared, job_id: JobId) -> Result<serde_json::Value, ApiError> {
    match s.handle.stored_result(job_id).await {
        Ok(Some(StoredJob::Ended(v))) => Ok(v),
        Ok(Some(StoredJob::Unfinished { .. })) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ended",
            format!("job {job_id} has not ended yet"),
        )),
        Ok(None) | Err(jobmesh_peer::DaemonError::NoJournal) => Err(unknown(job_id)),
        Err(e) => Err(daemon_error(&e)),
    }
}

async fn job(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let job_id = job_id(&id)?;
    if let Some(live) = live(&s, job_id).await {
        return Ok(axum::Json(serde_json::json!({
            "job_id": job_id.to_string(),
            "status": live.state,
            "capability": live.capability,
            "worker": live.worker,
            "attempts": live.attempts,
        }))
        .into_response());
    }
    match s.handle.stored_result(job_id).await {
        Ok(Some(StoredJob::Unfinished { attempt, worker })) => Ok(axum::Json(serde_json::json!({
            "job_id": job_id.to_string(),
            "status": if attempt == 0 { "queued" } else { "running" },
            "attempts": attempt,
            "worker": worker,
        }))
        .into_response()),
        _ => Ok(axum::Json(ended_envelope(&s, job_id).await?).into_response()),
    }
}

async fn cancel(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let job_id = job_id(&id)?;
    if s.handle.cancel(job_id).await {
        Ok(
            axum::Json(serde_json::json!({ "job_id": job_id.to_string(), "cancelled": true }))
                .into_response(),
        )
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_live",
            format!(
                "job {job_id} is not live on this daemon (it ended, or was never submitted here)"
            ),
        ))
    }
}

/// Most events a job's stream sends (its progress is coalesced upstream).
const MAX_JOB_EVENTS: usize = 100_000;

async fn events(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let job_id = job_id(&id)?;
    // Subscribe first, so no event falls between the check and the stream.
    let rx = s.handle.watch();
    if live(&s, job_id).await.is_none() {
        // Ended: its envelope as the one event.
        let envelope = ended_envelope(&s, job_id).await?;
        let e = Event::default().event("envelope").json_data(&envelope);
        let events = futures_util::stream::iter(e.ok().map(Ok::<_, std::convert::Infallible>));
        return Ok(Sse::new(events).into_response());
    }
    let stop = s.stop.clone();
    let stream = futures_util::stream::unfold((rx, false, 0usize), move |(mut rx, done, n)| {
        let stop = stop.clone();
        async move {
            if done || n >= MAX_JOB_EVENTS {
                return None;
            }
            loop {
                let got = tokio::select! {
                    () = stop.cancelled() => return None,
                    got = rx.recv() => got,
                };
                match got {
                    Ok(w) if w.job_id == job_id => {
                        let last = w.event == "finished";
                        let e = Event::default().event(w.event.clone()).json_data(&w).ok()?;
                        return Some((Ok::<_, std::convert::Infallible>(e), (rx, last, n + 1)));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        let e = Event::default().event("missed").data(missed.to_string());
                        return Some((Ok(e), (rx, false, n + 1)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn blob(
    State(s): State<Shared>,
    UrlPath((id, name)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let job_id = job_id(&id)?;
    let envelope = ended_envelope(&s, job_id).await?;
    let blobs: Vec<BlobInfo> =
        serde_json::from_value(envelope["blobs"].clone()).unwrap_or_default();
    let found = blobs
        .iter()
        .find(|b| b.name.as_deref() == Some(name.as_str()))
        .or_else(|| {
            name.parse::<u16>()
                .ok()
                .and_then(|i| blobs.iter().find(|b| b.index == i))
        });
    let gone = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_blob",
            format!("job {job_id} has no kept result blob {name:?} (by name or index)"),
        )
    };
    let path = found.and_then(|b| b.saved_to.clone()).ok_or_else(gone)?;
    let file = tokio::fs::File::open(&path).await.map_err(|_| gone())?;
    Ok((
        [(header::CONTENT_TYPE, sniff_file(&path))],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
