# The node's flash as a littlefs2 image file (as built by littlefs-python, block size 4096),
# mounted with vfs.VfsLfs2 over this block device: what the firmware writes lands in the image,
# and the host can read the image back with littlefs-python.
import os
import vfs

BLOCK_SIZE = 4096
MOUNT_POINT = "/flash"


class FileBlockDevice:
    # The extended block protocol (offset reads and writes, erase) that littlefs needs.
    # Writes go straight to the file (the unix port does not buffer), so a kill -9 loses nothing
    # that littlefs had written; sync (ioctl 3) also fsyncs, for host power losses.
    def __init__(self, image, block_size=BLOCK_SIZE):
        self.f = open(image, "r+b")
        self.block_size = block_size
        self.f.seek(0, 2)
        self.blocks = self.f.tell() // block_size

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * self.block_size + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        self.f.seek(block * self.block_size + (offset or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 3:  # sync
            self.f.flush()
        elif op == 4:  # block count
            return self.blocks
        elif op == 5:  # block size
            return self.block_size
        elif op == 6:  # erase: littlefs does not rely on erased contents
            return 0
        return 0


def mount(image, mount_point=MOUNT_POINT):
    # Mounts the image and makes it the current directory, as the flash is on a board.
    dev = FileBlockDevice(image)
    vfs.mount(vfs.VfsLfs2(dev), mount_point)
    os.chdir(mount_point)
    return dev
