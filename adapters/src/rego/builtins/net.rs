//! CIDR builtins beyond the ones compiled into modules (`net.cidr_contains`,
//! `net.cidr_intersects`), with `ipnet`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::{BuiltinError, Context, Output, arg, err, str_arg, type_name};

/// The most addresses `net.cidr_expand` lists: a /16 of IPv4. OPA has no
/// limit, but a policy must not make the host list 2^32 addresses.
const MAX_EXPANSION: u128 = 1 << 16;

/// A CIDR, or a bare address as a host route.
fn net_of(s: &str) -> Result<IpNet, BuiltinError> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| BuiltinError(format!("invalid CIDR or IP address {s:?}")))
}

pub(crate) fn cidr_is_valid(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let valid = arg(args, 0)?
        .as_str()
        .is_some_and(|s| s.parse::<IpNet>().is_ok());
    Ok(Value::Bool(valid).into())
}

pub(crate) fn cidr_expand(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let cidr = str_arg(args, 0)?;
    let net: IpNet = cidr
        .parse()
        .map_err(|_| BuiltinError(format!("invalid CIDR {cidr:?}")))?;
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    if host_bits >= 128 || 1u128 << host_bits > MAX_EXPANSION {
        return err(format!(
            "{cidr} has more than {MAX_EXPANSION} addresses, which is more than this host expands"
        ));
    }
    let hosts: Vec<Value> = match net {
        IpNet::V4(n) => {
            let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
            (first..=last)
                .map(|a| Value::String(std::net::Ipv4Addr::from(a).to_string()))
                .collect()
        }
        IpNet::V6(n) => {
            let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
            (first..=last)
                .map(|a| Value::String(std::net::Ipv6Addr::from(a).to_string()))
                .collect()
        }
    };
    Ok(Output::Set(hosts))
}

pub(crate) fn cidr_merge(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let Value::Array(items) = arg(args, 0)? else {
        return err(format!(
            "operand 1 must be one of {{array, set}} but got {}",
            type_name(arg(args, 0)?)
        ));
    };
    let nets = items
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| BuiltinError("operand 1 must contain only strings".into()))
                .and_then(net_of)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let merged = IpNet::aggregate(&nets)
        .into_iter()
        .map(|n| Value::String(n.to_string()))
        .collect();
    Ok(Output::Set(merged))
}

/// The (key, CIDR) entries of an operand of `net.cidr_contains_matches`:
/// a string (its own key), an array (keys are indices) or set (keys are the
/// elements), or an object (keys are its keys); an element may also be an
/// array whose first item is the CIDR.
fn entries(
    v: &Value,
    i: usize,
    array_keys_are_indices: bool,
) -> Result<Vec<(Value, IpNet)>, BuiltinError> {
    let cidr = |item: &Value| -> Result<IpNet, BuiltinError> {
        match item {
            Value::String(s) => net_of(s),
            Value::Array(a) => a
                .first()
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    BuiltinError(format!(
                        "operand {}: element arrays must start with a CIDR",
                        i + 1
                    ))
                })
                .and_then(net_of),
            other => err(format!(
                "operand {}: {} is not a CIDR",
                i + 1,
                type_name(other)
            )),
        }
    };
    match v {
        Value::String(s) => Ok(vec![(v.clone(), net_of(s)?)]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(idx, item)| {
                let key = if array_keys_are_indices {
                    Value::from(idx)
                } else {
                    item.clone()
                };
                Ok((key, cidr(item)?))
            })
            .collect(),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, item)| Ok((Value::String(k.clone()), cidr(item)?)))
            .collect(),
        other => err(format!(
            "operand {} must be string, array, set or object, not {}",
            i + 1,
            type_name(other)
        )),
    }
}

pub(crate) fn cidr_contains_matches(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    // Sets arrive as arrays; OPA keys array elements by index, which is what
    // a policy passing an array sees.
    let outer = entries(arg(args, 0)?, 0, true)?;
    let inner = entries(arg(args, 1)?, 1, true)?;
    let mut matches = Vec::new();
    for (k1, n1) in &outer {
        for (k2, n2) in &inner {
            if n1.contains(n2) {
                matches.push(Value::Array(vec![k1.clone(), k2.clone()]));
            }
        }
    }
    Ok(Output::Set(matches))
}

#[cfg(test)]
mod tests {
    use super::super::{Output, call};
    use serde_json::json;

    fn out(name: &str, args: serde_json::Value) -> Result<Output, String> {
        let serde_json::Value::Array(args) = args else {
            panic!()
        };
        call(name, args).map_err(|e| e.0)
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            out("net.cidr_is_valid", json!(["10.0.0.0/8"])).unwrap(),
            Output::Value(json!(true))
        );
        assert_eq!(
            out("net.cidr_is_valid", json!(["10.0.0.0"])).unwrap(),
            Output::Value(json!(false))
        );
        assert_eq!(
            out("net.cidr_expand", json!(["192.168.0.0/31"])).unwrap(),
            Output::Set(vec![json!("192.168.0.0"), json!("192.168.0.1")])
        );
        assert!(
            out("net.cidr_expand", json!(["0.0.0.0/0"]))
                .unwrap_err()
                .contains("more than")
        );
        assert_eq!(
            out(
                "net.cidr_merge",
                json!([["192.0.128.0/24", "192.0.129.0/24", "10.0.0.1"]])
            )
            .unwrap(),
            Output::Set(vec![json!("10.0.0.1/32"), json!("192.0.128.0/23")])
        );
        assert_eq!(
            out(
                "net.cidr_contains_matches",
                json!(["1.1.1.0/24", "1.1.1.128"])
            )
            .unwrap(),
            Output::Set(vec![json!(["1.1.1.0/24", "1.1.1.128"])])
        );
        assert_eq!(
            out(
                "net.cidr_contains_matches",
                json!([["1.1.0.0/16", "2.2.0.0/16"], {"x": "2.2.3.4"}])
            )
            .unwrap(),
            Output::Set(vec![json!([1, "x"])])
        );
    }
}
