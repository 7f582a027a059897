/* Test-only LD_PRELOAD shim: makes writes to one SQLite database fail with ENOSPC ("disk full")
 * while a trigger file exists, without root or a small filesystem. SQLite's unix VFS writes with
 * pwrite64() and write() and grows files with ftruncate64(); all three are intercepted for the
 * database file and its -wal, -shm and -journal companions.
 *   KVGRID_FAULT_DB       absolute path of the database file
 *   KVGRID_FAULT_TRIGGER  while this file exists, those writes fail with ENOSPC
 *   KVGRID_FAULT_ERRNO    "EIO" to fail them with EIO (an I/O error) instead
 * Used by tests/storage/store_faults_test.sh. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int FaultErrno(void) {
  const char* e = getenv("KVGRID_FAULT_ERRNO");
  return e != NULL && strcmp(e, "EIO") == 0 ? EIO : ENOSPC;
}

static int IsFaultTarget(int fd) {
  const char* db = getenv("KVGRID_FAULT_DB");
  const char* trigger = getenv("KVGRID_FAULT_TRIGGER");
  if (db == NULL || trigger == NULL) return 0;
  struct stat st;
  if (stat(trigger, &st) != 0) return 0;
  char link[64], path[4096];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof(path) - 1);
  if (n <= 0) return 0;
  path[n] = '\0';
  size_t len = strlen(db);
  if (strncmp(path, db, len) != 0) return 0;
  const char* rest = path + len;
  return *rest == '\0' || strcmp(rest, "-wal") == 0 || strcmp(rest, "-shm") == 0 ||
         strcmp(rest, "-journal") == 0;
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off_t offset) {
  static ssize_t (*real)(int, const void*, size_t, off_t) = NULL;
  if (real == NULL) real = (ssize_t(*)(int, const void*, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
  if (IsFaultTarget(fd)) {
    errno = FaultErrno();
    return -1;
  }
  return real(fd, buf, count, offset);
}

ssize_t write(int fd, const void* buf, size_t count) {
  static ssize_t (*real)(int, const void*, size_t) = NULL;
  if (real == NULL) real = (ssize_t(*)(int, const void*, size_t))dlsym(RTLD_NEXT, "write");
  if (fd > 2 && IsFaultTarget(fd)) {
    errno = FaultErrno();
    return -1;
  }
  return real(fd, buf, count);
}

int ftruncate64(int fd, off_t length) {
  static int (*real)(int, off_t) = NULL;
  if (real == NULL) real = (int (*)(int, off_t))dlsym(RTLD_NEXT, "ftruncate64");
  struct stat st;
  if (IsFaultTarget(fd) && fstat(fd, &st) == 0 && length > st.st_size) {
    errno = FaultErrno();
    return -1;
  }
  return real(fd, length);
}
