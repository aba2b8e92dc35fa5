//! Host-side bindings of `wit/plugin.wit`, generated at build time: the `step-component` world
//! here, and the `module-component` and `trigger-component` worlds in their own modules, which
//! share this one's host interfaces (so the linker defines them once and all worlds' types are
//! the same Rust types).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "step-component",
    imports: { default: async },
    exports: { default: async },
});

/// Bindings of another world of the package, reusing the host interfaces above.
macro_rules! world_sharing_host_interfaces {
    ($module:ident, $world:literal) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../../wit",
                world: $world,
                imports: { default: async },
                exports: { default: async },
                with: {
                    "wf:plugin/types": super::wf::plugin::types,
                    "wf:plugin/log": super::wf::plugin::log,
                    "wf:plugin/config": super::wf::plugin::config,
                    "wf:plugin/state": super::wf::plugin::state,
                    "wf:plugin/http": super::wf::plugin::http,
                    "wf:plugin/events": super::wf::plugin::events,
                    "wf:plugin/clock": super::wf::plugin::clock,
                },
            });
        }
    };
}

world_sharing_host_interfaces!(module_world, "module-component");
world_sharing_host_interfaces!(trigger_world, "trigger-component");
