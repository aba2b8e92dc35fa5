//! The original's Go-template dialect, translated to tera at compile time so one engine renders
//! both: `{{ .steps.parse.body.id }}`, `{{ index .steps "parse-request" "body" }}`,
//! `{{ default "pending" .status }}`, `{{ .name | lower }}`, `{{ uuidv4 }}`, `{{ if .ok }}…{{ end }}`.

/// Functions of the dialect. An action whose first word is one of these (or that starts with `.`)
/// is Go syntax; anything else is tera.
const GO_FUNCTIONS: &[&str] = &[
    "index", "default", "lower", "upper", "trim", "json", "uuidv4", "now", "eq", "ne", "lt", "le",
    "gt", "ge", "and", "or", "not", "len", "if", "else", "end", "range", "with", "define",
    "template",
];

/// Whether the inside of a `{{ … }}` action is written in the Go dialect.
pub fn is_go_action(action: &str) -> bool {
    let action = action.trim();
    if action.starts_with('.') || action.starts_with('$') {
        return true;
    }
    let first = action
        .split(|c: char| c.is_whitespace() || c == '|' || c == ')')
        .next()
        .unwrap_or("");
    GO_FUNCTIONS.contains(&first) && !action[first.len()..].starts_with('(')
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(Vec<String>),
    Str(String),
    Number(String),
    Ident(String),
    Pipe,
    Open,
    Close,
}

fn tokenize(action: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = action.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '"' | '`' => {
                let quote = c;
                let mut text = String::new();
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    if chars[i] == '\\' && quote == '"' && i + 1 < chars.len() {
                        i += 1;
                        text.push(match chars[i] {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    } else {
                        text.push(chars[i]);
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated string".to_string());
                }
                i += 1;
                tokens.push(Token::Str(text));
            }
            '.' => {
                // `.a.b-c.d`: a field chain; hyphens are allowed in names, as step names use them.
                let mut segments = Vec::new();
                while i < chars.len() && chars[i] == '.' {
                    i += 1;
                    let start = i;
                    while i < chars.len()
                        && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '-')
                    {
                        i += 1;
                    }
                    if start == i {
                        if segments.is_empty() {
                            return Err(
                                "`.` alone (the whole data) is not supported; name a field"
                                    .to_string(),
                            );
                        }
                        return Err("a field name is missing after `.`".to_string());
                    }
                    segments.push(chars[start..i].iter().collect());
                }
                tokens.push(Token::Field(segments));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                tokens.push(Token::Number(chars[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            '$' => {
                return Err(
                    "template variables (`$x`) are not supported; use tera's `{% set %}`"
                        .to_string(),
                );
            }
            other => return Err(format!("unexpected `{other}`")),
        }
    }
    Ok(tokens)
}

/// What a Go action becomes in tera.
pub enum Translated {
    /// `{{ expr }}`
    Expression(String),
    /// `{% ... %}` (if / else / end)
    Statement(String),
}

/// Translates one Go action. `blocks` tracks open `if`s so `end` closes the right one.
pub fn translate_action(
    action: &str,
    blocks: &mut Vec<&'static str>,
) -> Result<Translated, String> {
    let tokens = tokenize(action.trim())?;
    match tokens.first() {
        Some(Token::Ident(word)) if word == "if" => {
            let condition = pipeline(&tokens[1..])?;
            blocks.push("if");
            Ok(Translated::Statement(format!("{{% if {condition} %}}")))
        }
        Some(Token::Ident(word)) if word == "else" => {
            if tokens.len() > 1 {
                if let Some(Token::Ident(next)) = tokens
                    .get(1)
                    .filter(|t| matches!(t, Token::Ident(w) if w == "if"))
                {
                    let _ = next;
                    let condition = pipeline(&tokens[2..])?;
                    return Ok(Translated::Statement(format!("{{% elif {condition} %}}")));
                }
                return Err("`else` takes no arguments here".to_string());
            }
            Ok(Translated::Statement("{% else %}".to_string()))
        }
        Some(Token::Ident(word)) if word == "end" => match blocks.pop() {
            Some(block) => Ok(Translated::Statement(format!("{{% end{block} %}}"))),
            None => Err("`end` without an open `if`".to_string()),
        },
        Some(Token::Ident(word))
            if word == "range" || word == "with" || word == "define" || word == "template" =>
        {
            Err(format!(
                "`{word}` is not supported in the Go dialect; write the template in tera syntax"
            ))
        }
        _ => Ok(Translated::Expression(pipeline(&tokens)?)),
    }
}

/// `cmd | cmd | ...`: each later command gets the previous result as its last argument.
fn pipeline(tokens: &[Token]) -> Result<String, String> {
    let mut commands: Vec<&[Token]> = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Open => depth += 1,
            Token::Close => depth -= 1,
            Token::Pipe if depth == 0 => {
                commands.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    commands.push(&tokens[start..]);
    let mut result: Option<String> = None;
    for command in commands {
        if command.is_empty() {
            return Err("empty command in a pipeline".to_string());
        }
        result = Some(command_expr(command, result)?);
    }
    result.ok_or_else(|| "empty action".to_string())
}

/// Operands of a command, with parenthesised sub-pipelines kept together.
fn operands(tokens: &[Token]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Open => {
                let mut depth = 1;
                let start = i + 1;
                i += 1;
                while i < tokens.len() && depth > 0 {
                    match tokens[i] {
                        Token::Open => depth += 1,
                        Token::Close => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                }
                if depth != 0 {
                    return Err("unbalanced parentheses".to_string());
                }
                out.push(pipeline(&tokens[start..i - 1])?);
                continue;
            }
            Token::Close => return Err("unbalanced parentheses".to_string()),
            Token::Field(segments) => out.push(field(segments)?),
            Token::Str(s) => out.push(string_literal(s)),
            Token::Number(n) => out.push(n.clone()),
            Token::Ident(word) => out.push(match word.as_str() {
                "true" | "false" => word.clone(),
                "nil" => return Err("`nil` is not supported".to_string()),
                "uuidv4" => "uuidv4()".to_string(),
                "now" => "now()".to_string(),
                other => {
                    return Err(format!(
                        "unknown function `{other}` in an argument position"
                    ));
                }
            }),
            Token::Pipe => return Err("unexpected `|`".to_string()),
        }
        i += 1;
    }
    Ok(out)
}

fn command_expr(command: &[Token], piped: Option<String>) -> Result<String, String> {
    let (function, args) = match &command[0] {
        Token::Ident(word) if !matches!(word.as_str(), "true" | "false") => {
            (Some(word.as_str()), &command[1..])
        }
        _ => (None, command),
    };
    // tera cannot negate a parenthesised comparison: `not (eq a b)` becomes `a != b`.
    if function == Some("not")
        && piped.is_none()
        && let [Token::Open, Token::Ident(op), inner @ .., Token::Close] = args
    {
        let inverse = match op.as_str() {
            "eq" => Some("ne"),
            "ne" => Some("eq"),
            "lt" => Some("ge"),
            "le" => Some("gt"),
            "gt" => Some("le"),
            "ge" => Some("lt"),
            _ => None,
        };
        if let Some(inverse) = inverse {
            let mut tokens = vec![Token::Ident(inverse.to_string())];
            tokens.extend(inner.iter().cloned());
            return command_expr(&tokens, None);
        }
    }
    let mut args = operands(args)?;
    args.extend(piped);
    let arity = |n: usize, name: &str| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "`{name}` takes {n} argument{}, got {}",
                if n == 1 { "" } else { "s" },
                args.len()
            ))
        }
    };
    let Some(function) = function else {
        return match args.as_slice() {
            [single] => Ok(single.clone()),
            _ => Err("several values without a function".to_string()),
        };
    };
    Ok(match function {
        "index" => {
            let (target, keys) = args.split_first().ok_or("`index` needs a value and keys")?;
            let mut expr = target.clone();
            for key in keys {
                expr.push_str(&format!("[{key}]"));
            }
            expr
        }
        "default" => {
            arity(2, "default")?;
            // Go's `default FALLBACK VALUE`: the fallback when the value is missing or empty.
            format!(
                "{} | default(value={}) | wf_default(value={})",
                args[1], args[0], args[0]
            )
        }
        "lower" | "upper" | "trim" => {
            arity(1, function)?;
            format!("{} | {function}", args[0])
        }
        "json" => {
            arity(1, "json")?;
            format!("{} | json_encode()", args[0])
        }
        "len" => {
            arity(1, "len")?;
            format!("{} | length", args[0])
        }
        "uuidv4" => {
            arity(0, "uuidv4")?;
            "uuidv4()".to_string()
        }
        "now" => match args.as_slice() {
            [] => "now()".to_string(),
            [format] => format!("now(format={format})"),
            _ => return Err("`now` takes at most a format".to_string()),
        },
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(2, function)?;
            let op = match function {
                "eq" => "==",
                "ne" => "!=",
                "lt" => "<",
                "le" => "<=",
                "gt" => ">",
                _ => ">=",
            };
            format!("{} {op} {}", args[0], args[1])
        }
        "and" | "or" => {
            if args.len() < 2 {
                return Err(format!("`{function}` needs at least 2 arguments"));
            }
            format!("({})", args.join(&format!(" {function} ")))
        }
        "not" => {
            arity(1, "not")?;
            // tera can negate a path or a comparison, not a grouped expression.
            if args[0].starts_with('(') || args[0].contains(" | ") {
                return Err("`not` of `and`, `or` or a function is not supported in the Go dialect; negate each comparison instead (`or (ne .a 1) (ne .b 2)`)".to_string());
            }
            format!("not {}", args[0])
        }
        other => return Err(format!("unknown function `{other}`")),
    })
}

/// `.steps.parse-request.body` → `steps["parse-request"].body`.
fn field(segments: &[String]) -> Result<String, String> {
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        let plain = segment.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !segment.starts_with(|c: char| c.is_ascii_digit());
        if i == 0 && plain {
            out.push_str(segment);
        } else if i == 0 {
            return Err(format!(
                "top-level field `{segment}` needs a plain name (letters, digits, `_`)"
            ));
        } else if plain {
            out.push('.');
            out.push_str(segment);
        } else if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            // `.items.0`: a list index
            out.push_str(&format!("[{segment}]"));
        } else {
            out.push_str(&format!("[{}]", string_literal(segment)));
        }
    }
    Ok(out)
}

fn string_literal(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(action: &str) -> String {
        match translate_action(action, &mut Vec::new()).unwrap() {
            Translated::Expression(e) => e,
            Translated::Statement(s) => s,
        }
    }

    #[test]
    fn detects_the_dialect() {
        assert!(is_go_action(" .steps.parse.body.id "));
        assert!(is_go_action("index .steps \"a\" \"b\""));
        assert!(is_go_action("uuidv4"));
        assert!(!is_go_action("name | lower"));
        assert!(!is_go_action("now()"));
        assert!(!is_go_action("steps.parse.body"));
    }

    #[test]
    fn translates_fields_index_and_functions() {
        assert_eq!(expr(".steps.parse.body.id"), "steps.parse.body.id");
        assert_eq!(
            expr(".steps.parse-request.body"),
            "steps[\"parse-request\"].body"
        );
        assert_eq!(
            expr("index .steps \"parse-request\" \"body\" \"name\""),
            "steps[\"parse-request\"][\"body\"][\"name\"]"
        );
        assert_eq!(
            expr("default \"pending\" .status"),
            "status | default(value=\"pending\") | wf_default(value=\"pending\")"
        );
        assert_eq!(expr(".name | lower"), "name | lower");
        assert_eq!(expr("lower .name"), "name | lower");
        assert_eq!(expr("json .data"), "data | json_encode()");
        assert_eq!(expr("uuidv4"), "uuidv4()");
        assert_eq!(expr("eq .a \"x\""), "a == \"x\"");
        assert_eq!(expr("not (eq .a 1)"), "a != 1");
        assert_eq!(expr("and (eq .a 1) (or .b .c)"), "(a == 1 and (b or c))");
    }

    #[test]
    fn if_else_end() {
        let mut blocks = Vec::new();
        let t = |a: &str, b: &mut Vec<&'static str>| match translate_action(a, b).unwrap() {
            Translated::Statement(s) | Translated::Expression(s) => s,
        };
        assert_eq!(t("if .ok", &mut blocks), "{% if ok %}");
        assert_eq!(t("else if eq .a 1", &mut blocks), "{% elif a == 1 %}");
        assert_eq!(t("else", &mut blocks), "{% else %}");
        assert_eq!(t("end", &mut blocks), "{% endif %}");
        assert!(translate_action("end", &mut blocks).is_err());
    }

    #[test]
    fn unsupported_forms_say_so() {
        assert!(
            translate_action("range .items", &mut Vec::new())
                .err()
                .unwrap()
                .contains("not supported")
        );
        assert!(
            translate_action("printf \"%d\" .x", &mut Vec::new())
                .err()
                .unwrap()
                .contains("unknown function `printf`")
        );
        assert!(
            translate_action("default .x", &mut Vec::new())
                .err()
                .unwrap()
                .contains("takes 2 arguments")
        );
    }
}
