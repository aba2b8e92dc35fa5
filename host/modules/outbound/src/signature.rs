//! The webhook signature `webhook.sender` signs with and `webhook` connectors check:
//! `X-Webhook-Signature: sha256=<hex>`, an HMAC-SHA256 of `<X-Webhook-Timestamp>.<body>`.
//! Signing the timestamp with the body lets a receiver refuse replays of old requests.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signed request's timestamp may be from the receiver's clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// `sha256=<hex>` over `<timestamp>.<body>`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a request's signature headers against `body`, at `now` (Unix seconds). The error
/// says what is wrong, for the `401` answer; it never includes the expected signature.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(), &'static str> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err("the request is not signed (X-Webhook-Timestamp and X-Webhook-Signature)");
    };
    let sent: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "X-Webhook-Timestamp is not a Unix time in seconds")?;
    if sent.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err("X-Webhook-Timestamp is too old or in the future");
    }
    let hex = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or("X-Webhook-Signature is not `sha256=<hex>`")?;
    let bytes = decode_hex(hex).ok_or("X-Webhook-Signature is not `sha256=<hex>`")?;
    // Constant-time comparison.
    mac(secret, timestamp.trim(), body)
        .verify_slice(&bytes)
        .map_err(|_| "the signature does not match")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_time_and_key() {
        let signature = sign("key", "1000", b"{\"a\":1}");
        assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64);
        let check =
            |key, ts, sig: &str, body: &[u8], now| verify(key, Some(ts), Some(sig), body, now);
        assert_eq!(check("key", "1000", &signature, b"{\"a\":1}", 1100), Ok(()));
        assert!(check("key", "1000", &signature, b"{\"a\":2}", 1100).is_err());
        assert!(check("other", "1000", &signature, b"{\"a\":1}", 1100).is_err());
        assert!(check("key", "1001", &signature, b"{\"a\":1}", 1100).is_err());
        assert!(
            check(
                "key",
                "1000",
                &signature,
                b"{\"a\":1}",
                1000 + MAX_CLOCK_SKEW_SECS + 1
            )
            .unwrap_err()
            .contains("too old")
        );
        assert!(check("key", "1000", "sha256=zz", b"{}", 1000).is_err());
        assert!(check("key", "1000", "md5=00", b"{}", 1000).is_err());
        assert!(
            verify("key", None, Some(&signature), b"{}", 1000)
                .unwrap_err()
                .contains("not signed")
        );
    }
}
