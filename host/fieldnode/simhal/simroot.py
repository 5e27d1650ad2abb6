# The node's flash as its root directory, as on a board: the ESP32 port mounts its filesystem at
# "/" (ports/esp32/modules/inisetup.py, _boot.py), so an absolute path the host tools write
# (`flash --app-only` writes /main.py, /lib/fnode/...) lands in the flash. The unix port starts
# with the host's own root at "/"; simboot swaps it for the flash and keeps the host's root at
# HOST, where the simulated HAL finds the node directory and its own modules.
import os
import sys
import vfs

HOST = ""  # "" until mount_flash() has run (a plain `micropython` run in a test)
_HOST_MOUNT = "/_host"
_FLASH_PATHS = ("/", "/lib")  # sys.path entries that name the flash, as '' and /lib do on a board


class FlashDir:
    # A host directory as a filesystem of its own. Not vfs.VfsPosix(directory): with a root
    # given, this port's VfsPosix builds both of rename()'s paths in one buffer, so every rename
    # fails with ENOENT (the spool and NVS rely on rename).
    def __init__(self, host, root):
        self.host = host
        self.root = root
        self.cwd = "/"

    def _path(self, path):
        if path[:1] != "/":
            path = self.cwd.rstrip("/") + "/" + path
        return self.root + path.rstrip("/")

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def chdir(self, path):
        full = self._path(path)
        self.host.stat(full)  # ENOENT for a directory that is not there, as on a board
        self.cwd = full[len(self.root):] or "/"

    def getcwd(self):
        return self.cwd

    def open(self, path, mode):
        return self.host.open(self._path(path), mode)

    def ilistdir(self, path):
        return self.host.ilistdir(self._path(path) or "/")

    def stat(self, path):
        return self.host.stat(self._path(path) or self.root)

    def statvfs(self, path):
        return self.host.statvfs(self.root)

    def mkdir(self, path):
        self.host.mkdir(self._path(path))

    def rmdir(self, path):
        self.host.rmdir(self._path(path))

    def remove(self, path):
        self.host.remove(self._path(path))

    def rename(self, old, new):
        self.host.rename(self._path(old), self._path(new))


def mount_flash(directory=None, image=None):
    global HOST
    host = vfs.mount()[0][0]  # the unix port's VfsPosix at "/", with no root of its own
    if image:
        import simflash
        flash = vfs.VfsLfs2(simflash.FileBlockDevice(image))
    else:
        flash = FlashDir(host, directory.rstrip("/"))
    vfs.umount("/")
    vfs.mount(flash, "/")
    vfs.mount(host, _HOST_MOUNT)
    HOST = _HOST_MOUNT
    os.chdir("/")
    for i, entry in enumerate(sys.path):
        if entry[:1] == "/" and entry not in _FLASH_PATHS:
            sys.path[i] = HOST + entry


def host_path(path):
    # A host path (from the environment) as this node sees it.
    return HOST + path if path[:1] == "/" else path
