/* How fast glibc's memcpy copies 16 KiB blocks (a TLS record's worth) out of a 64 MiB buffer
 * into a page-aligned buffer, by how far the destination lies past the source within a 4 KiB
 * page. rustls copies each record to 5 bytes past a page-aligned start: "diff 5" below.
 * Run by benches/scripts/rep_movsb_alias.sh, with and without the tunable docs/operations.md sets on AMD CPUs
 * (bin/flightcache/memcpy.rs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  const size_t total = 64 << 20, block = 16384;
  const int diffs[] = {0, 5, 13, 31, 32, 64, 1024};
  char *src, *dst;
  if (posix_memalign((void **)&src, 4096, total) || posix_memalign((void **)&dst, 4096, 2 * block)) {
    perror("posix_memalign");
    return 1;
  }
  memset(src, 1, total);
  memset(dst, 0, 2 * block);
  for (size_t k = 0; k < sizeof diffs / sizeof diffs[0]; k++) {
    double best = 1e9;
    for (int round = 0; round < 5; round++) {
      double start = now();
      for (size_t offset = 0; offset < total; offset += block) {
        memcpy(dst + diffs[k], src + offset, block);
        __asm__ volatile("" ::: "memory"); /* keep every copy */
      }
      double elapsed = now() - start;
      if (elapsed < best) best = elapsed;
    }
    printf("diff %4d: %6.2f GB/s\n", diffs[k], total / best / 1e9);
  }
  return dst[5] == 42;
}
