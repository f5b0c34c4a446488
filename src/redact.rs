//! Secrets kept out of logs, error messages and `Debug` output: the password of a database URL,
//! in its userinfo (`postgres://user:secret@host/db`) or in a query parameter
//! (`?password=secret`), and the values of secret Kafka properties (`sasl.password`, …).

/// What a secret is replaced with.
pub(crate) const MASK: &str = "***";

/// Whether a URL query parameter or a Kafka property named `name` holds a secret:
/// `password`, `sslpassword`, `pass`, `sasl.password`, `ssl.key.password`,
/// `ssl.keystore.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ….
pub(crate) fn is_secret_name(name: &str) -> bool {
    let name = percent_decode(name).to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "credential", "jaas"]
        .iter()
        .any(|word| name.contains(word))
        || (name.contains("key") && name.ends_with(".pem"))
        || name == "sasl.oauthbearer.config"
}

/// `text` with the password of every URL in it masked: the userinfo password and the values of
/// secret query parameters. Text without a URL comes back unchanged.
///
/// `postgres://u:pw@h/db?sslmode=require&password=pw` → `postgres://u:***@h/db?sslmode=require&password=***`
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Each URL runs from its scheme to the next blank or quote.
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    // A URL without `//` (`sqlite:x.db?password=…`) or a bare query string.
    if rest.contains('?') || rest.contains('=') {
        out.push_str(&redact_url(rest));
    } else {
        out.push_str(rest);
    }
    out
}

/// The names of the secret query parameters of `url`, decoded and in lower case.
pub(crate) fn secret_query_params(url: &str) -> Vec<String> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .filter(|name| is_secret_name(name))
        .map(|name| percent_decode(name).to_ascii_lowercase())
        .collect()
}

/// One URL with its password masked.
fn redact_url(url: &str) -> String {
    let (base, query) = split_query(url);
    let mut out = String::with_capacity(url.len());
    match base.find("://") {
        // The userinfo ends at the last `@`: a password may hold an unescaped `@`.
        Some(scheme_end) => match base[scheme_end + 3..].rfind('@') {
            Some(at) => {
                let authority = scheme_end + 3;
                let userinfo = &base[authority..authority + at];
                out.push_str(&base[..authority]);
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&base[authority + at..]);
            }
            None => out.push_str(base),
        },
        None => out.push_str(base),
    }
    if let Some(query) = query {
        if !base.is_empty() || url.starts_with('?') {
            out.push('?');
        }
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_secret_name(name) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(MASK);
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

/// A URL's part before the query, and its query (which starts at the first `?`: passwords are
/// percent-encoded in URLs, while query values may hold an `@`).
fn split_query(url: &str) -> (&str, Option<&str>) {
    match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        // A bare `a=b&c=d`, e.g. what follows a `?` in free text.
        None if !url.contains("://") && url.contains('=') => ("", Some(url)),
        None => (url, None),
    }
}

/// `%xx` escapes decoded, for comparing parameter names (`pass%77ord` is `password`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_passwords_are_masked() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://:secret@h/db"), "postgres://:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db?mode=rwc"), "sqlite://x.db?mode=rwc");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn query_passwords_are_masked() {
        assert_eq!(
            redact("postgres://h/db?password=secret"),
            "postgres://h/db?password=***"
        );
        assert_eq!(
            redact(
                "mysql://u:a@b@h/db?ssl-mode=REQUIRED&PassWord=s&sslpassword=t&pass=x&Pass%77ord=y"
            ),
            "mysql://u:***@h/db?ssl-mode=REQUIRED&PassWord=***&sslpassword=***&pass=***&Pass%77ord=***"
        );
        assert_eq!(redact("sqlite:x.db?password=s"), "sqlite:x.db?password=***");
        assert_eq!(
            redact("postgres://h/db?application_name=a@b&password=s"),
            "postgres://h/db?application_name=a@b&password=***"
        );
    }

    #[test]
    fn urls_inside_text_are_masked() {
        assert_eq!(
            redact(
                "cannot use \"postgres://u:pw@h/db?password=pw\" (bad): retry postgres://h?password=x"
            ),
            "cannot use \"postgres://u:***@h/db?password=***\" (bad): retry postgres://h?password=***"
        );
        assert_eq!(redact("no url here, a=b"), "no url here, a=b");
    }

    #[test]
    fn secret_names() {
        for name in [
            "password",
            "sslpassword",
            "pass",
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.truststore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "security.protocol",
            "sasl.username",
            "sslmode",
            "ssl.key.location",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
