{
  "targets": [{
    "target_name": "stripvault_seal",
    "sources": ["appliance/split/native/seal.cc"],
    "cflags_cc": ["-O2", "-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2"]
  }]
}
