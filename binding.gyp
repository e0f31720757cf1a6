{
  "targets": [
    {
      "target_name": "keylatch_fastpath",
      "sources": ["native/fastpath.c", "native/mixer.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [
        # The room mixer batches its sends with io_uring when liburing-dev is installed (.ci/run
        # installs it), linked statically so the built addon needs no liburing at run time; without it
        # the mixer sends one sendto at a time, as before.
        ["<!(test -e /usr/include/liburing.h && echo 1 || echo 0)==1", {
          "defines": ["KEYLATCH_IO_URING"],
          "libraries": ["-l:liburing.a"]
        }]
      ]
    }
  ]
}
