//! Host-side bindings of `wit/plugin.wit`, generated at build time.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "step-component",
    imports: { default: async },
    exports: { default: async },
});
