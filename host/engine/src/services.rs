//! Services: what modules offer each other, looked up by module name and typed by trait.
//!
//! A module registers `Arc<dyn HttpHandler>` (say) under its name; another part of the app asks
//! for `services.get::<dyn HttpHandler>("users")` and gets either the handler or an error that says
//! exactly what was wrong: no such module, or a module of another kind.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use wf_config::did_you_mean;

/// A trait object type that modules can provide as a service.
///
/// Implemented for `dyn SomeTrait` next to the trait: `impl ServiceKind for dyn HttpHandler
/// { const LABEL: &'static str = "an HTTP handler"; }`.
pub trait ServiceKind: Send + Sync + 'static {
    /// How to name one of these in a sentence: "an HTTP handler".
    const LABEL: &'static str;
}

struct Provided {
    type_id: TypeId,
    label: &'static str,
    /// An `Arc<T>` for the `T` of `type_id`.
    value: Box<dyn Any + Send + Sync>,
}

struct Entry {
    name: String,
    module_type: String,
    provided: Vec<Provided>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("no module named `{name}` (wanted {wanted}){}", suggestion_text(.suggestion))]
    NotFound {
        name: String,
        wanted: &'static str,
        suggestion: Option<String>,
    },
    #[error("module `{name}` (`{module_type}`) is not {wanted}{}", provides_text(.provides))]
    WrongKind {
        name: String,
        module_type: String,
        wanted: &'static str,
        provides: Vec<&'static str>,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

fn provides_text(provides: &[&'static str]) -> String {
    if provides.is_empty() {
        "; it provides no services".to_string()
    } else {
        format!("; it provides {}", provides.join(", "))
    }
}

/// Every service of an application, in module declaration order.
#[derive(Default)]
pub struct Services {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.name))
            .finish()
    }
}

impl Services {
    /// Records that module `name` of type `module_type` exists, even if it provides nothing, so
    /// lookups can say "not an HTTP handler" rather than "no such module".
    pub fn declare(&mut self, name: &str, module_type: &str) {
        if !self.index.contains_key(name) {
            self.index.insert(name.to_string(), self.entries.len());
            self.entries.push(Entry {
                name: name.to_string(),
                module_type: module_type.to_string(),
                provided: Vec::new(),
            });
        }
    }

    /// Registers `service` under `name`. A second service of the same kind replaces the first.
    pub fn provide<T: ServiceKind + ?Sized>(
        &mut self,
        name: &str,
        module_type: &str,
        service: Arc<T>,
    ) {
        self.declare(name, module_type);
        let entry = &mut self.entries[self.index[name]];
        entry.provided.retain(|p| p.type_id != TypeId::of::<T>());
        entry.provided.push(Provided {
            type_id: TypeId::of::<T>(),
            label: T::LABEL,
            value: Box::new(service),
        });
    }

    pub fn get<T: ServiceKind + ?Sized>(&self, name: &str) -> Result<Arc<T>, ServiceError> {
        let Some(entry) = self.index.get(name).map(|&i| &self.entries[i]) else {
            let candidates = self.names_providing::<T>();
            return Err(ServiceError::NotFound {
                name: name.to_string(),
                wanted: T::LABEL,
                suggestion: did_you_mean(name, candidates.iter().copied()).map(str::to_string),
            });
        };
        entry
            .provided
            .iter()
            .find(|p| p.type_id == TypeId::of::<T>())
            .and_then(|p| p.value.downcast_ref::<Arc<T>>())
            .cloned()
            .ok_or_else(|| ServiceError::WrongKind {
                name: name.to_string(),
                module_type: entry.module_type.clone(),
                wanted: T::LABEL,
                provides: entry.provided.iter().map(|p| p.label).collect(),
            })
    }

    /// Every service of kind `T`, in the order the modules were built (deterministic, unlike
    /// the original's map iteration).
    pub fn all<T: ServiceKind + ?Sized>(&self) -> Vec<(&str, Arc<T>)> {
        self.entries
            .iter()
            .filter_map(|e| {
                let p = e.provided.iter().find(|p| p.type_id == TypeId::of::<T>())?;
                Some((e.name.as_str(), p.value.downcast_ref::<Arc<T>>()?.clone()))
            })
            .collect()
    }

    pub fn names_providing<T: ServiceKind + ?Sized>(&self) -> Vec<&str> {
        self.all::<T>().into_iter().map(|(name, _)| name).collect()
    }

    /// The module type that registered `name`.
    pub fn module_type(&self, name: &str) -> Option<&str> {
        self.index
            .get(name)
            .map(|&i| self.entries[i].module_type.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Greeter: Send + Sync {
        fn greet(&self) -> String;
    }
    impl ServiceKind for dyn Greeter {
        const LABEL: &'static str = "a greeter";
    }
    trait Counter: Send + Sync {}
    impl ServiceKind for dyn Counter {
        const LABEL: &'static str = "a counter";
    }

    struct Hello;
    impl Greeter for Hello {
        fn greet(&self) -> String {
            "hello".into()
        }
    }
    struct Count;
    impl Counter for Count {}

    #[test]
    fn typed_lookup_and_clear_errors() {
        let mut services = Services::default();
        services.provide::<dyn Greeter>("greeter", "demo.greeter", Arc::new(Hello));
        services.provide::<dyn Counter>("counter", "demo.counter", Arc::new(Count));

        assert_eq!(
            services.get::<dyn Greeter>("greeter").unwrap().greet(),
            "hello"
        );

        let err = services.get::<dyn Greeter>("counter").err().unwrap();
        assert_eq!(
            err.to_string(),
            "module `counter` (`demo.counter`) is not a greeter; it provides a counter"
        );

        let err = services.get::<dyn Greeter>("greter").err().unwrap();
        assert_eq!(
            err.to_string(),
            "no module named `greter` (wanted a greeter); did you mean `greeter`?"
        );
    }

    #[test]
    fn all_is_in_declaration_order() {
        let mut services = Services::default();
        for name in ["c", "a", "b"] {
            services.provide::<dyn Greeter>(name, "demo.greeter", Arc::new(Hello));
        }
        services.declare("plain", "demo.other");
        let names: Vec<_> = services
            .all::<dyn Greeter>()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["c", "a", "b"]);
        assert_eq!(
            services
                .get::<dyn Greeter>("plain")
                .err()
                .unwrap()
                .to_string(),
            "module `plain` (`demo.other`) is not a greeter; it provides no services"
        );
    }
}
