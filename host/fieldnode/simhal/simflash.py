# The node's flash as a littlefs2 image file (as built by littlefs-python, block size 4096),
# mounted with vfs.VfsLfs2 over this block device: what the firmware writes lands in the image,
# and the host can read the image back with littlefs-python.
# The device counts what a flash chip would see: reads, programs and erases (ioctl 6), in all
# and per block, in "<image>.wear" (JSON), written at the first program after a sync ("dirty":
# 1, a commit under way) and at each sync ("dirty": 0). A kill -9 that leaves "dirty": 1 cut
# littlefs in the middle of a commit.
import json
import os
import simroot
import vfs

BLOCK_SIZE = 4096
MOUNT_POINT = "/flash"
# Non-zero while littlefs is inside this block device's writeblocks or ioctl: the simulation's
# scheduled work waits (simtick), as no callback runs inside the ESP32's C flash driver.
# readblocks needs no mark (see there).
busy = 0


class FileBlockDevice:
    # The extended block protocol (offset reads and writes, erase) that littlefs needs.
    # Writes go straight to the file (the unix port does not buffer), so a kill -9 loses nothing
    # that littlefs had written; sync (ioctl 3) also fsyncs, for host power losses.
    def __init__(self, image, block_size=BLOCK_SIZE):
        self.f = open(image, "r+b")
        self.block_size = block_size
        self.f.seek(0, 2)
        self.blocks = self.f.tell() // block_size
        self.wear_path = image + ".wear"
        self.wear = {"reads": 0, "read_bytes": 0, "progs": 0, "prog_bytes": 0, "erases": 0,
                     "read": [0] * self.blocks, "programmed": [0] * self.blocks, "erased": [0] * self.blocks,
                     "dirty": 0}
        try:
            with open(self.wear_path) as f:
                old = json.load(f)
            if all(len(old.get(k, ())) == self.blocks for k in ("read", "programmed", "erased")):
                self.wear.update(old)  # counts go on across power cycles of the same flash
        except (OSError, ValueError):
            pass
        self.wear["dirty"] = 0

    def _save_wear(self, dirty):
        # Renamed into place: a kill -9 in the middle leaves the previous record whole.
        self.wear["dirty"] = dirty
        path = simroot.host_path(self.wear_path)  # the image may be the node's "/" by now
        with open(path + ".tmp", "w") as f:
            json.dump(self.wear, f)
        os.rename(path + ".tmp", path)

    def readblocks(self, block, buf, offset=0):
        # No branch and no call into Python code: the VM runs scheduled callbacks only at a jump
        # (py/vm.c, pending_exception_check), so none can run in here and `busy` need not be
        # set, which keeps littlefs's most frequent call as cheap as it was.
        self.wear["reads"] += 1
        self.wear["read_bytes"] += len(buf)
        self.wear["read"][block] += 1
        self.f.seek(block * self.block_size + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        global busy
        busy += 1  # set before the first branch, where the VM may run a scheduled callback
        try:
            self._program(block, buf, offset)
        finally:
            busy -= 1

    def _program(self, block, buf, offset):
        if not self.wear["dirty"]:
            self._save_wear(1)
        import simnode  # here: imported before the flash is mounted, it would take the host's root for "/"
        simnode.writing()  # a power cut asked for here leaves the commit cut short ("dirty": 1)
        self.wear["progs"] += 1
        self.wear["prog_bytes"] += len(buf)
        self.wear["programmed"][block] += 1
        self.f.seek(block * self.block_size + (offset or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        global busy
        busy += 1  # set before the first branch, where the VM may run a scheduled callback
        try:
            return self._control(op, arg)
        finally:
            busy -= 1

    def _control(self, op, arg):
        if op == 3:  # sync
            self.f.flush()
            self._save_wear(0)
        elif op == 4:  # block count
            return self.blocks
        elif op == 5:  # block size
            return self.block_size
        elif op == 6:  # erase: counted; littlefs does not rely on erased contents
            if not self.wear["dirty"]:
                self._save_wear(1)
            self.wear["erases"] += 1
            self.wear["erased"][arg] += 1
            return 0
        return 0


def mount(image, mount_point=MOUNT_POINT):
    # Mounts the image and makes it the current directory, as the flash is on a board.
    dev = FileBlockDevice(image)
    vfs.mount(vfs.VfsLfs2(dev), mount_point)
    os.chdir(mount_point)
    return dev
