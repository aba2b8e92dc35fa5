//! The smallest useful step: greets whoever the input names.

use wf_sdk::prelude::*;

struct Hello;

impl Step for Hello {
    fn info() -> Info {
        Info::new("hello", "Greets whoever the input names")
    }

    fn run(input: Value, ctx: &Ctx) -> Result<Output, StepError> {
        let name = input["name"].as_str().unwrap_or("world");
        let greeting = ctx
            .config_get::<String>("greeting")?
            .unwrap_or("hello".into());
        Ok(json!({ "message": format!("{greeting}, {name}") }).into())
    }
}

export_step!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use wf_sdk::testing::Harness;

    #[test]
    fn greets_by_name_with_the_configured_greeting() {
        let harness = Harness::new().config(json!({"greeting": "hi"}));
        let out = harness.run::<Hello>(json!({"name": "ada"})).unwrap();
        assert_eq!(out, Output::Next(json!({"message": "hi, ada"})));
    }
}
