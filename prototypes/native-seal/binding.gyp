{
  "targets": [{
    "target_name": "stripvault_seal",
    "sources": ["src/seal.cc"],
    "cflags_cc": ["-O2", "-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
  }]
}
