{
  "targets": [
    {
      "target_name": "keylatch_fastpath",
      "sources": ["native/fastpath.c", "native/mixer.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
