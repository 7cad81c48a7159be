//! `POST /v1/rpc/call`: calls a service of a linked node, for people and
//! scripts; arguments and answers as JSON (MessagePack values mapped one
//! to one, binary as `{"bin": "<hex>"}`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fogwire_rpc_proto::Value;

use crate::ndjson;
use crate::server::{ApiState, error};
use fogwire_api::{RpcCallRequest, RpcLine};

/// Longest time a call may be given from the API.
const TIMEOUT_MAX: Duration = Duration::from_secs(3600);

/// A JSON value as MessagePack.
pub fn to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(to_value).collect()),
        serde_json::Value::Object(map) => {
            if let (1, Some(serde_json::Value::String(hex))) = (map.len(), map.get("bin"))
                && let Some(bytes) = from_hex(hex)
            {
                return Value::Binary(bytes);
            }
            Value::Map(
                map.iter()
                    .map(|(key, value)| (Value::from(key.as_str()), to_value(value)))
                    .collect(),
            )
        }
    }
}

/// A MessagePack value as JSON (map keys that are not strings are
/// written as their JSON text).
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => i
            .as_u64()
            .map(serde_json::Value::from)
            .or_else(|| i.as_i64().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::F32(f) => serde_json::Value::from(f64::from(*f)),
        Value::F64(f) => serde_json::Value::from(*f),
        Value::String(s) => serde_json::Value::from(s.as_str().unwrap_or("")),
        Value::Binary(bytes) => serde_json::json!({ "bin": hex::encode(bytes) }),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = match key.as_str() {
                        Some(key) => key.to_owned(),
                        None => to_json(key).to_string(),
                    };
                    (key, to_json(value))
                })
                .collect(),
        ),
        Value::Ext(kind, bytes) => serde_json::json!({ "ext": kind, "bin": hex::encode(bytes) }),
    }
}

pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

pub(crate) async fn call(State(state): State<Arc<ApiState>>, body: Bytes) -> Response {
    let request: RpcCallRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(parse_error) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{parse_error}; expected {{\"node\", \"service\", \"method\": \"<name or index>\", \"args\"?: [...], \"timeout_ms\"?}}"
                ),
            );
        }
    };
    let nodes = match state.node.routing().nodes().await {
        Ok(nodes) => nodes,
        Err(failure) => return error(StatusCode::SERVICE_UNAVAILABLE, failure.to_string()),
    };
    let peer = match crate::routes::resolve(&state.names, &nodes, &request.node) {
        Ok(peer) => peer,
        Err(refusal) => return refusal.into_response(),
    };
    let rpc = state.node.rpc().clone();
    let timeout = request
        .timeout_ms
        .map(|ms| Duration::from_millis(ms).min(TIMEOUT_MAX));
    // A method by name: the peer's locator says its index.
    let method = match &request.method {
        serde_json::Value::Number(n) if let Some(index) = n.as_u64() => index,
        serde_json::Value::String(name) => {
            let answer = rpc
                .request(
                    peer,
                    fogwire_rpc::locator::LOCATOR,
                    0,
                    vec![Value::from(request.service.as_str())],
                    Some(Duration::from_secs(10)),
                )
                .await;
            let index = answer.ok().and_then(|chunks| {
                let methods = chunks.first()?.get(2)?.as_map()?.clone();
                methods
                    .iter()
                    .find(|(key, _)| key.as_str() == Some(name.as_str()))
                    .and_then(|(_, index)| index.as_u64())
            });
            match index {
                Some(index) => index,
                None => {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{} does not serve a method `{name}` of `{}` (its locator says so)",
                            peer.short(),
                            request.service
                        ),
                    );
                }
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "method is a name or an index".to_owned(),
            );
        }
    };
    let args: Vec<Value> = request.args.iter().map(to_value).collect();
    let (lines, response) = ndjson::streamed();
    tokio::spawn(async move {
        let mut call = match rpc
            .call(peer, &request.service, method, args, timeout)
            .await
        {
            Ok(call) => call,
            Err(call_error) => {
                let _ = lines
                    .send(Ok(ndjson::line(&RpcLine::Error {
                        code: call_error.code(),
                        message: call_error.to_string(),
                    })))
                    .await;
                return;
            }
        };
        while let Some(chunk) = call.next().await {
            let line = match chunk {
                Ok(args) => RpcLine::Chunk(args.iter().map(to_json).collect()),
                Err(call_error) => RpcLine::Error {
                    code: call_error.code(),
                    message: call_error.to_string(),
                },
            };
            let failed = matches!(line, RpcLine::Error { .. });
            if lines.send(Ok(ndjson::line(&line))).await.is_err() || failed {
                return;
            }
        }
        let _ = lines.send(Ok(ndjson::line(&RpcLine::Choke))).await;
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_messagepack_map_one_to_one() {
        let json = serde_json::json!([
            null, true, 5, -3, 1.5, "text", [1, [2]], {"k": {"bin": "00ff"}}
        ]);
        let value = to_value(&json);
        let Value::Array(items) = &value else {
            panic!("an array");
        };
        assert_eq!(items[2], Value::from(5u64));
        assert_eq!(items[3], Value::from(-3i64));
        let Value::Map(map) = &items[7] else {
            panic!("a map");
        };
        assert_eq!(map[0].1, Value::Binary(vec![0x00, 0xff]));
        assert_eq!(to_json(&value), json);
        // Not hex, or an object with more keys: an ordinary map.
        for object in [
            serde_json::json!({"bin": "0g"}),
            serde_json::json!({"bin": "abc"}),
            serde_json::json!({"bin": "00", "x": 1}),
        ] {
            assert!(matches!(to_value(&object), Value::Map(_)), "{object}");
        }
    }
}
