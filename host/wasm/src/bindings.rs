//! Host-side bindings of `wit/plugin.wit`, generated at build time: the `step-component` world
//! here, and `module-component` in [`module_world`], which shares the host interfaces (so the
//! linker defines them once and both worlds' types are the same Rust types).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "step-component",
    imports: { default: async },
    exports: { default: async },
});

pub mod module_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "module-component",
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

pub mod trigger_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "trigger-component",
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
