package riskrules

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ruleCase exercises one default rule: a true positive when rule is in
// want, a near miss otherwise. want lists every rule the script must match,
// in Defaults order, so a case also catches other rules firing by accident.
type ruleCase struct {
	rule, name, lang, script string
	want                     []string
}

// Languages, short.
const (
	sh = "bash"
	py = "python3"
)

var ruleCases = []ruleCase{
	// the shell as it would run: evasions of the line patterns
	{"rm-root", "root in a variable", sh, `x=/; rm -rf $x`, []string{"rm-root"}},
	{"rm-root", "root as a default", sh, `rm -rf ${X:-/}`, []string{"rm-root"}},
	{"rm-root", "command in a variable", sh, `r=rm; $r -rf /`, []string{"rm-root"}},
	{"rm-root", "root from echo", sh, `rm -rf $(echo /)`, []string{"rm-root"}},
	{"rm-root", "dot segments", sh, `rm -rf /./`, []string{"rm-root"}},
	{"rm-root", "variable on another line", sh, "d=/etc\ncd /tmp\nrm -rf \"$d\"", []string{"rm-root"}},
	{"rm-root", "variable reassigned safe", sh, "d=/\nd=/tmp/build\nrm -rf \"$d\"", nil},
	{"rm-root", "a default that is not root", sh, `rm -rf ${BUILD:-/tmp/build}`, nil},
	{"rm-root", "unknown variable", sh, `rm -rf "$BUILD_DIR/out"`, nil},
	{"find-delete-root", "find / -delete", sh, `find / -delete`, []string{"find-delete-root"}},
	{"find-delete-root", "find /etc -exec rm", sh, `find /etc -xdev -exec rm -f {} +`, []string{"find-delete-root"}},
	{"find-delete-root", "a filtered cleanup", sh, `find / -xdev -name '*.tmp' -delete`, nil},
	{"find-delete-root", "a build dir", sh, `find /tmp/build -delete`, nil},
	{"copy-onto-device", "cp zero onto a disk", sh, `cp /dev/zero /dev/sda`, []string{"copy-onto-device"}},
	{"copy-onto-device", "an image onto a disk", sh, `sudo cp disk.img /dev/nvme0n1; sync`, []string{"copy-onto-device"}},
	{"copy-onto-device", "backing up a disk", sh, `cp /dev/sda /backup/sda.img`, nil},
	{"truncate-auth-command", "truncate passwd", sh, `truncate -s0 /etc/passwd`, []string{"truncate-auth-command"}},
	{"truncate-auth-command", "truncate a log", sh, `truncate -s0 /var/log/app.log`, nil},
	// rm-root
	{"rm-root", "rm -rf /", sh, `rm -rf /`, []string{"rm-root"}},
	{"rm-root", "rm -fr /", sh, `rm -fr /`, []string{"rm-root"}},
	{"rm-root", "separate flags", sh, `rm -r -f /`, []string{"rm-root"}},
	{"rm-root", "long flags", sh, `rm --recursive --force /`, []string{"rm-root"}},
	{"rm-root", "no-preserve-root", sh, `rm -rf --no-preserve-root /`, []string{"rm-root"}},
	{"rm-root", "sudo and glob", sh, `sudo rm -rf /*`, []string{"rm-root"}},
	{"rm-root", "capital R", sh, `rm -Rf /etc`, []string{"rm-root"}},
	{"rm-root", "verbose bundle", sh, `rm -vfR /usr/`, []string{"rm-root"}},
	{"rm-root", "contents of var", sh, `rm -rf /var/*`, []string{"rm-root"}},
	{"rm-root", "home by full path", sh, `/bin/rm -rf /home`, []string{"rm-root"}},
	{"rm-root", "quoted root", sh, `rm -rf "/"`, []string{"rm-root"}},
	{"rm-root", "double slash", sh, `rm -rf //`, []string{"rm-root"}},
	{"rm-root", "root as a later operand", sh, `rm -rf /tmp/build /`, []string{"rm-root"}},
	{"rm-root", "stray space", sh, `rm -rf / tmp/build`, []string{"rm-root"}},
	{"rm-root", "flags after operand", sh, `rm / -rf`, []string{"rm-root"}},
	{"rm-root", "after semicolon", sh, `echo x; rm -rf /`, []string{"rm-root"}},
	{"rm-root", "after and", sh, `make clean && rm -rf /boot`, []string{"rm-root"}},
	{"rm-root", "in command substitution", sh, `x=$(rm -rf /lib)`, []string{"rm-root"}},
	{"rm-root", "continued line", sh, "rm -rf \\\n  /", []string{"rm-root"}},
	{"rm-root", "bash -c", sh, `bash -c "rm -rf /"`, []string{"rm-root"}},
	{"rm-root", "ssh remote", sh, `ssh web1 'sudo rm -rf /etc'`, []string{"rm-root"}},
	{"rm-root", "echoed (accepted false positive)", sh, `echo "rm -rf /"`, []string{"rm-root"}},
	{"rm-root", "sh language", "sh", `rm -rf /`, []string{"rm-root"}},
	{"rm-root", "python os.system", py, `os.system("rm -rf /")`, []string{"rm-root"}},
	{"rm-root", "python argv list", py, `subprocess.run(["rm", "-rf", "/"])`, []string{"rm-root"}},
	{"rm-root", "python shell string", py, `subprocess.call('sudo rm -rf /*', shell=True)`, []string{"rm-root"}},
	{"rm-root", "tmp subdirectory", sh, `rm -rf /tmp/build`, nil},
	{"rm-root", "relative dist", sh, `rm -rf ./dist`, nil},
	{"rm-root", "single etc file", sh, `rm -f /etc/foo.conf`, nil},
	{"rm-root", "not recursive", sh, `rm -f /etc`, nil},
	{"rm-root", "interactive not recursive", sh, `rm -i /`, nil},
	{"rm-root", "app logs", sh, `rm -rf /var/log/app/*.log`, nil},
	{"rm-root", "prefix of a top dir", sh, `rm -rf /etcetera`, nil},
	{"rm-root", "deep opt path", sh, `rm -rf /opt/app/releases/old`, nil},
	{"rm-root", "whole tmp", sh, `rm -rf /tmp`, nil},
	{"rm-root", "rmdir", sh, `rmdir /var`, nil},
	{"rm-root", "docker --rm", sh, `docker run --rm -v /:/host alpine ls /host`, nil},
	{"rm-root", "root in the next command", sh, `rm -rf build && ls /`, nil},
	{"rm-root", "root after a pipe", sh, `rm -rf build | tee /`, nil},
	{"rm-root", "comment", sh, `# rm -rf /`, nil},
	{"rm-root", "indented comment", sh, "\t  # rm -rf /", nil},
	{"rm-root", "variable then glob", sh, `rm -rf "$DIR"/*`, []string{"rm-var-slash"}},
	{"rm-root", "root then quoted variable", sh, `rm -rf /"$SUB"`, nil},
	{"rm-root", "home cache", sh, `rm -rf "$HOME/.cache"`, nil},
	{"rm-root", "longer command name", sh, `farm -rf /`, nil},
	{"rm-root", "python argv tmp", py, `subprocess.run(["rm", "-rf", "/tmp/x"])`, nil},

	// mkfs
	{"mkfs", "mkfs.ext4", sh, `mkfs.ext4 /dev/sdb1`, []string{"mkfs"}},
	{"mkfs", "mkfs -t", sh, `mkfs -t xfs /dev/nvme1n1`, []string{"mkfs"}},
	{"mkfs", "mke2fs", sh, `mke2fs -F /dev/vdb`, []string{"mkfs"}},
	{"mkfs", "variable device", sh, `sudo mkfs.xfs -f "$DISK"`, []string{"mkfs"}},
	{"mkfs", "command substitution", sh, `mkfs.vfat $(losetup -f)`, []string{"mkfs"}},
	{"mkfs", "over ssh", sh, `ssh db1 'mkfs.ext4 /dev/sdb'`, []string{"mkfs"}},
	{"mkfs", "python argv", py, `subprocess.run(["mkfs.ext4", "/dev/sdc"])`, []string{"mkfs"}},
	{"mkfs", "availability check", sh, `command -v mkfs.xfs >/dev/null || yum install -y xfsprogs`, nil},
	{"mkfs", "image file", sh, `mkfs.ext4 -F /tmp/disk.img`, nil},
	{"mkfs", "man page", sh, `man mkfs`, nil},
	{"mkfs", "listing", sh, `ls /sbin/mkfs.*`, nil},
	{"mkfs", "package install", sh, `apt-get install -y e2fsprogs dosfstools`, nil},

	// wipe-device
	{"wipe-device", "wipefs -a", sh, `wipefs -a /dev/sdb`, []string{"wipe-device"}},
	{"wipe-device", "wipefs --all", sh, `wipefs --all --force /dev/nvme0n1`, []string{"wipe-device"}},
	{"wipe-device", "wipefs offset", sh, `wipefs -o 0x438 /dev/sdc1`, []string{"wipe-device"}},
	{"wipe-device", "wipefs bundled", sh, `wipefs -fa /dev/sdb`, []string{"wipe-device"}},
	{"wipe-device", "blkdiscard", sh, `blkdiscard /dev/nvme0n1`, []string{"wipe-device"}},
	{"wipe-device", "shred disk", sh, `shred -n 1 -z /dev/sda`, []string{"wipe-device"}},
	{"wipe-device", "wipefs lists only", sh, `wipefs /dev/sdb`, nil},
	{"wipe-device", "wipefs no-act", sh, `wipefs --no-act /dev/sdb`, nil},
	{"wipe-device", "shred a file", sh, `shred -u /tmp/secret.key`, nil},
	{"wipe-device", "blkdiscard help", sh, `blkdiscard --help`, nil},

	// dd-device
	{"dd-device", "zero a disk", sh, `dd if=/dev/zero of=/dev/sda bs=1M`, []string{"dd-device"}},
	{"dd-device", "of first", sh, `dd of=/dev/nvme0n1 if=image.raw`, []string{"dd-device"}},
	{"dd-device", "flash an iso", sh, `sudo dd bs=4M if=ubuntu.iso of=/dev/sdb status=progress`, []string{"dd-device"}},
	{"dd-device", "mmcblk", sh, `dd if=/dev/urandom of=/dev/mmcblk0`, []string{"dd-device"}},
	{"dd-device", "xvd", sh, `dd if=x of=/dev/xvda`, []string{"dd-device"}},
	{"dd-device", "hd", sh, `dd if=x of=/dev/hda`, []string{"dd-device"}},
	{"dd-device", "vd partition", sh, `dd if=x of=/dev/vdb1`, []string{"dd-device"}},
	{"dd-device", "quoted device", sh, `dd if=x of="/dev/sdb"`, []string{"dd-device"}},
	{"dd-device", "lvm volume", sh, `dd if=x of=/dev/mapper/vg0-root`, []string{"dd-device"}},
	{"dd-device", "python argv", py, `subprocess.check_call(["dd", "if=/dev/zero", "of=/dev/sda"])`, []string{"dd-device"}},
	{"dd-device", "to a tmp file", sh, `dd if=/dev/zero of=/tmp/file bs=1M count=100`, nil},
	{"dd-device", "disk backup", sh, `dd if=/dev/sda of=/backup/sda.img`, nil},
	{"dd-device", "to null", sh, `dd if=/dev/urandom of=/dev/null count=1`, nil},
	{"dd-device", "to shm", sh, `dd if=/dev/zero of=/dev/shm/buf`, nil},
	{"dd-device", "other command", sh, `add of=/dev/sda`, nil},

	// redirect-device
	{"redirect-device", "cat onto disk", sh, `cat image.raw > /dev/sda`, []string{"redirect-device"}},
	{"redirect-device", "no space", sh, `echo 0 >/dev/nvme0n1`, []string{"redirect-device"}},
	{"redirect-device", "append", sh, `cat /dev/urandom >> /dev/vdb`, []string{"redirect-device"}},
	{"redirect-device", "truncate", sh, `: > /dev/sda`, []string{"redirect-device"}},
	{"redirect-device", "both streams", sh, `cat x &>/dev/sda1`, []string{"redirect-device"}},
	{"redirect-device", "clobber", sh, `cat x >| /dev/sdb`, []string{"redirect-device"}},
	{"redirect-device", "tee", sh, `gunzip -c img.gz | tee /dev/sdb >/dev/null`, []string{"redirect-device"}},
	{"redirect-device", "null", sh, `echo done > /dev/null`, nil},
	{"redirect-device", "stderr", sh, `cmd 2>/dev/stderr`, nil},
	{"redirect-device", "disk read into a file", sh, `cat /dev/sda > disk.img`, nil},
	{"redirect-device", "disk as input", sh, `md5sum < /dev/sda`, nil},
	{"redirect-device", "sysfs knob", sh, `echo 1 > /sys/block/sda/device/rescan`, nil},
	{"redirect-device", "tee a log", sh, `run | tee -a /var/log/app.log`, nil},

	// fork-bomb
	{"fork-bomb", "classic", sh, `:(){ :|:& };:`, []string{"fork-bomb"}},
	{"fork-bomb", "no spaces", sh, `:(){:|:&};:`, []string{"fork-bomb"}},
	{"fork-bomb", "named", sh, `bomb() { bomb | bomb & }; bomb`, []string{"fork-bomb"}},
	{"fork-bomb", "short name", sh, `f(){ f|f& };f`, []string{"fork-bomb"}},
	{"fork-bomb", "function keyword", sh, `function boom { boom|boom& }; boom`, []string{"fork-bomb"}},
	{"fork-bomb", "function keyword and parens", sh, `function f() { f | f &; }`, []string{"fork-bomb"}},
	{"fork-bomb", "perl", sh, `perl -e "fork while fork"`, []string{"fork-bomb"}},
	{"fork-bomb", "python one-liner", py, `while True: os.fork()`, []string{"fork-bomb"}},
	{"fork-bomb", "function with a pipe", sh, `f() { echo hi | cat; }`, nil},
	{"fork-bomb", "background server", sh, `run() { ./worker --port 80 | tee log & }`, nil},
	{"fork-bomb", "background pipeline", sh, `cat a | grep b &`, nil},
	{"fork-bomb", "log function", sh, `log(){ echo "$@" >&2; }`, nil},
	{"fork-bomb", "python fork once", py, `pid = os.fork()`, nil},

	// chmod-chown-root
	{"chmod-chown-root", "chmod 777", sh, `chmod -R 777 /`, []string{"chmod-chown-root"}},
	{"chmod-chown-root", "chmod 000", sh, `chmod -R 000 /`, []string{"chmod-chown-root"}},
	{"chmod-chown-root", "chown", sh, `sudo chown -R nobody:nogroup /`, []string{"chmod-chown-root"}},
	{"chmod-chown-root", "chown usr", sh, `chown -R app /usr`, []string{"chmod-chown-root"}},
	{"chmod-chown-root", "flag after mode", sh, `chmod 777 -R /etc/`, []string{"chmod-chown-root"}},
	{"chmod-chown-root", "chgrp glob", sh, `chgrp -R staff /*`, []string{"chmod-chown-root"}},
	{"chmod-chown-root", "long flag", sh, `chmod --recursive a+rwx /var`, []string{"chmod-chown-root"}},
	{"chmod-chown-root", "web root", sh, `chmod -R 755 /var/www/html`, nil},
	{"chmod-chown-root", "app dir", sh, `chown -R app:app /opt/app`, nil},
	{"chmod-chown-root", "one file", sh, `chmod 644 /etc/foo.conf`, nil},
	{"chmod-chown-root", "not recursive", sh, `chmod 755 /`, nil},
	{"chmod-chown-root", "-r is a mode", sh, `chmod -r /etc`, nil},

	// truncate-auth-files
	{"truncate-auth-files", "passwd", sh, `echo 'root::0:0::/root:/bin/bash' > /etc/passwd`, []string{"truncate-auth-files"}},
	{"truncate-auth-files", "sudoers heredoc", sh, `cat > /etc/sudoers <<EOF`, []string{"truncate-auth-files"}},
	{"truncate-auth-files", "shadow", sh, `: >/etc/shadow`, []string{"truncate-auth-files"}},
	{"truncate-auth-files", "python shell string", py, `os.system("echo x > /etc/group")`, []string{"truncate-auth-files"}},
	{"truncate-auth-files", "append", sh, `echo 'app ALL=(ALL) NOPASSWD: ALL' >> /etc/sudoers`, nil},
	{"truncate-auth-files", "read", sh, `cat /etc/passwd > /tmp/passwd.bak`, nil},
	{"truncate-auth-files", "grep", sh, `grep app /etc/group >/dev/null`, nil},
	{"truncate-auth-files", "sudoers.d", sh, `echo x > /etc/sudoers.d/app`, nil},
	{"truncate-auth-files", "backup name", sh, `cat x > /etc/passwd.new`, nil},

	// py-rmtree-root
	{"py-rmtree-root", "root", py, `shutil.rmtree('/')`, []string{"py-rmtree-root"}},
	{"py-rmtree-root", "etc", py, `shutil.rmtree("/etc", ignore_errors=True)`, []string{"py-rmtree-root"}},
	{"py-rmtree-root", "raw string", py, `rmtree(r'/usr/')`, []string{"py-rmtree-root"}},
	{"py-rmtree-root", "tmp build", py, `shutil.rmtree('/tmp/build')`, nil},
	{"py-rmtree-root", "variable", py, `shutil.rmtree(path)`, nil},
	{"py-rmtree-root", "app logs", py, `shutil.rmtree('/var/log/app')`, nil},
	{"py-rmtree-root", "bash script", sh, `shutil.rmtree('/')`, nil},

	// py-overwrite-critical
	{"py-overwrite-critical", "disk", py, `open('/dev/sda', 'wb')`, []string{"py-overwrite-critical"}},
	{"py-overwrite-critical", "disk r+", py, `with open("/dev/nvme0n1", "r+b") as f:`, []string{"py-overwrite-critical"}},
	{"py-overwrite-critical", "passwd mode=", py, `open('/etc/passwd', mode='w')`, []string{"py-overwrite-critical"}},
	{"py-overwrite-critical", "disk read", py, `open('/dev/sda', 'rb')`, nil},
	{"py-overwrite-critical", "passwd read", py, `open('/etc/passwd')`, nil},
	{"py-overwrite-critical", "new file", py, `open('/etc/passwd.new', 'w')`, nil},
	{"py-overwrite-critical", "null", py, `open('/dev/null', 'w')`, nil},

	// rm-var-slash
	{"rm-var-slash", "steam bug", sh, `rm -rf "$STEAMROOT/"*`, []string{"rm-var-slash"}},
	{"rm-var-slash", "bare", sh, `rm -rf $DIR/`, []string{"rm-var-slash"}},
	{"rm-var-slash", "braces glob", sh, `rm -rf "${BUILD}"/*`, []string{"rm-var-slash"}},
	{"rm-var-slash", "guarded", sh, `rm -rf "${DIR:?}/"*`, nil},
	{"rm-var-slash", "subdirectory", sh, `rm -rf "$DIR/build"`, nil},
	{"rm-var-slash", "the variable itself", sh, `rm -rf "$DIR"`, nil},
	{"rm-var-slash", "not recursive", sh, `rm -f $DIR/`, nil},

	// partition-write
	{"partition-write", "fdisk heredoc", sh, `fdisk /dev/sdb <<EOF`, []string{"partition-write"}},
	{"partition-write", "fdisk fed by echo", sh, `echo -e "n\np\n1\n\n\nw" | fdisk /dev/sdb`, []string{"partition-write"}},
	{"partition-write", "sfdisk layout", sh, `sfdisk /dev/sdb < layout.sfdisk`, []string{"partition-write"}},
	{"partition-write", "sfdisk delete", sh, `sfdisk --delete /dev/sda 2`, []string{"partition-write"}},
	{"partition-write", "sgdisk zap", sh, `sgdisk --zap-all /dev/sdb`, []string{"partition-write"}},
	{"partition-write", "parted mklabel", sh, `parted -s /dev/sdb mklabel gpt`, []string{"partition-write"}},
	{"partition-write", "parted mkpart", sh, `parted /dev/sdb --script -- mkpart primary ext4 0% 100%`, []string{"partition-write"}},
	{"partition-write", "fdisk list", sh, `fdisk -l`, nil},
	{"partition-write", "fdisk list a disk", sh, `fdisk -l /dev/sda`, nil},
	{"partition-write", "fdisk list bundled", sh, `sudo fdisk -lu /dev/sda`, nil},
	{"partition-write", "sfdisk dump", sh, `sfdisk -d /dev/sda > part.bak`, nil},
	{"partition-write", "sfdisk dump long", sh, `sfdisk --dump /dev/sda`, nil},
	{"partition-write", "sgdisk print", sh, `sgdisk -p /dev/sda`, nil},
	{"partition-write", "parted list", sh, `parted -l`, nil},
	{"partition-write", "parted print", sh, `parted /dev/sda print`, nil},
	{"partition-write", "lsblk", sh, `lsblk /dev/sda`, nil},

	// shutdown-reboot
	{"shutdown-reboot", "reboot", sh, `reboot`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "shutdown now", sh, `shutdown -h now`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "sudo delayed", sh, `sudo shutdown -r +5`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "sudo -u", sh, `sudo -u root reboot`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "init 0", sh, `init 0`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "init 6", "sh", `/sbin/init 6`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "telinit", sh, `telinit 0`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "systemctl reboot", sh, `systemctl reboot`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "systemctl with flag", sh, `systemctl --no-block poweroff`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "conditional", sh, `[ -f /var/run/reboot-required ] && reboot`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "in if", sh, `if maintenance; then poweroff; fi`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "halt", sh, `halt -p`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "over ssh with sudo", sh, `ssh web1 'sudo reboot'`, []string{"shutdown-reboot"}},
	{"shutdown-reboot", "in backquotes", sh, "x=`reboot`", []string{"shutdown-reboot"}},
	{"shutdown-reboot", "restart a service", sh, `systemctl restart nginx`, nil},
	{"shutdown-reboot", "reboot-required check", sh, `[ -f /var/run/reboot-required ] && echo needed`, nil},
	{"shutdown-reboot", "last reboot", sh, `last reboot`, nil},
	{"shutdown-reboot", "shutdown log", sh, `tail /var/log/shutdown.log`, nil},
	{"shutdown-reboot", "git init", sh, `git init 0`, nil},
	{"shutdown-reboot", "runlevel 3", sh, `init 3`, nil},
	{"shutdown-reboot", "prose", sh, `echo System will shut down`, nil},
	{"shutdown-reboot", "echoed", sh, `echo "reboot required"`, nil},
	{"shutdown-reboot", "variable", sh, `reboot_required=1`, nil},
	{"shutdown-reboot", "python assignment", py, `halt = True`, nil},

	// py-shutdown-reboot
	{"py-shutdown-reboot", "os.system", py, `os.system("reboot")`, []string{"py-shutdown-reboot"}},
	{"py-shutdown-reboot", "argv", py, `subprocess.run(["shutdown", "-h", "now"])`, []string{"py-shutdown-reboot"}},
	{"py-shutdown-reboot", "systemctl argv", py, `subprocess.call(["systemctl", "reboot"])`, []string{"py-shutdown-reboot"}},
	{"py-shutdown-reboot", "sudo init", py, `os.system('sudo /sbin/init 6')`, []string{"py-shutdown-reboot"}},
	{"py-shutdown-reboot", "assignment", py, `halt = True`, nil},
	{"py-shutdown-reboot", "function", py, `def reboot(host):`, nil},
	{"py-shutdown-reboot", "log message", py, `log.info("scheduled shutdown of %s", host)`, nil},
	{"py-shutdown-reboot", "restart", py, `subprocess.run(["systemctl", "restart", "app"])`, nil},

	// crontab-remove
	{"crontab-remove", "crontab -r", sh, `crontab -r`, []string{"crontab-remove"}},
	{"crontab-remove", "for a user", sh, `crontab -u app -r`, []string{"crontab-remove"}},
	{"crontab-remove", "bundled", sh, `sudo crontab -ri`, []string{"crontab-remove"}},
	{"crontab-remove", "list", sh, `crontab -l`, nil},
	{"crontab-remove", "rewrite", sh, `crontab -l | grep -v backup | crontab -`, nil},
	{"crontab-remove", "install", sh, `crontab /tmp/new.cron`, nil},
	{"crontab-remove", "list for root", sh, `crontab -u root -l`, nil},

	// py-remove-system-file
	{"py-remove-system-file", "passwd", py, `os.remove('/etc/passwd')`, []string{"py-remove-system-file"}},
	{"py-remove-system-file", "binary", py, `os.unlink("/usr/bin/python3")`, []string{"py-remove-system-file"}},
	{"py-remove-system-file", "ssh dir", py, `shutil.rmtree('/etc/ssh')`, []string{"py-remove-system-file"}},
	{"py-remove-system-file", "sshd config", py, `os.remove('/etc/ssh/sshd_config')`, []string{"py-remove-system-file"}},
	{"py-remove-system-file", "pathlib", py, `Path('/boot/vmlinuz').unlink()`, []string{"py-remove-system-file"}},
	{"py-remove-system-file", "app log", py, `os.remove('/var/log/app/old.log')`, nil},
	{"py-remove-system-file", "nginx site", py, `os.remove('/etc/nginx/sites-enabled/default')`, nil},
	{"py-remove-system-file", "variable", py, `os.remove(path)`, nil},
	{"py-remove-system-file", "pathlib read", py, `Path('/etc/passwd').read_text()`, nil},
	{"py-remove-system-file", "backup copy", py, `os.remove('/etc/hosts.bak')`, nil},
}

func TestDefaultRules(t *testing.T) {
	e, err := New(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ruleCases {
		t.Run(c.rule+"/"+c.name, func(t *testing.T) {
			findings, _ := e.Check(c.lang, c.script)
			if diff := cmp.Diff(ruleIDs(findings), c.want); diff != "" {
				t.Errorf("%s %q (-got +want):\n%s", c.lang, c.script, diff)
			}
		})
	}
}

// TestDefaultRulesCovered makes sure every default rule has both a true
// positive and a near miss in ruleCases.
func TestDefaultRulesCovered(t *testing.T) {
	for _, r := range scriptDefaults() { // destination rules: destinations_test.go
		var pos, neg int
		for _, c := range ruleCases {
			if c.rule != r.ID {
				continue
			}
			if slices.Contains(c.want, r.ID) {
				pos++
			} else {
				neg++
			}
		}
		if pos == 0 || neg == 0 {
			t.Errorf("rule %q: %d positive and %d near-miss cases; want at least one of each", r.ID, pos, neg)
		}
	}
	for _, c := range ruleCases {
		if !slices.ContainsFunc(Defaults(), func(r Rule) bool { return r.ID == c.rule }) {
			t.Errorf("case %q names unknown rule %q", c.name, c.rule)
		}
	}
}

// ordinary are everyday scripts that no default rule may flag.
var ordinary = []struct{ name, lang, script string }{
	{"apt install", sh, `#!/bin/bash
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y --no-install-recommends nginx curl ca-certificates \
    xfsprogs e2fsprogs
rm -rf /var/lib/apt/lists/*
systemctl enable --now nginx
systemctl restart nginx
`},
	{"log cleanup", sh, `#!/bin/sh
# Keep a week of app logs; never touch /var/log itself.
LOG_DIR=/var/log/app
find "$LOG_DIR" -type f -name '*.log' -mtime +7 -delete
find /var/log/app -name '*.gz' -mtime +30 -exec rm -f {} \;
rm -rf /var/log/app/tmp/*
du -sh "$LOG_DIR" 2>/dev/null || true
`},
	{"deploy", sh, `#!/usr/bin/env bash
set -e
RELEASE=/opt/app/releases/$(date +%s)
mkdir -p "$RELEASE"
tar -xzf /tmp/app.tgz -C "$RELEASE"
ln -sfn "$RELEASE" /opt/app/current
chown -R app:app /opt/app
chmod -R 755 /opt/app/current/bin
rm -rf "${RELEASE:?}/cache"
ls -1dt /opt/app/releases/* | tail -n +6 | xargs -r rm -rf
docker run --rm -v /srv/data:/data alpine:3 ls /data
if [ -f /var/run/reboot-required ]; then echo "reboot pending" >&2; fi
`},
	{"disk report", sh, `#!/bin/bash
lsblk -o NAME,SIZE,TYPE,MOUNTPOINT
fdisk -l 2>/dev/null | grep '^Disk /dev/'
blkid /dev/sda1 || true
df -h / /var /home
dd if=/dev/sda bs=512 count=1 2>/dev/null | xxd | head
cat /proc/partitions > /tmp/partitions.txt
crontab -l > /tmp/crontab.bak
`},
	{"python maintenance", py, `#!/usr/bin/env python3
"""Rotate build artefacts."""
import os
import shutil
import subprocess

BUILD = "/tmp/build"

def main():
    # shutil.rmtree("/") would be a disaster; we only clean BUILD.
    shutil.rmtree(BUILD, ignore_errors=True)
    os.makedirs(BUILD, exist_ok=True)
    with open("/etc/hostname") as f:
        host = f.read().strip()
    subprocess.run(["systemctl", "restart", "app"], check=True)
    subprocess.run(["rm", "-rf", os.path.join(BUILD, "old")], check=True)
    for name in os.listdir("/var/log/app"):
        if name.endswith(".gz"):
            os.remove(os.path.join("/var/log/app", name))
    print(f"cleaned on {host}")

if __name__ == "__main__":
    main()
`},
}

func TestOrdinaryScripts(t *testing.T) {
	e, err := New(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ordinary {
		t.Run(c.name, func(t *testing.T) {
			got, err := e.Check(c.lang, c.script)
			if len(got) != 0 || err != nil {
				t.Errorf("findings %+v, err %v; want none", got, err)
			}
		})
	}
}

func ruleIDs(fs []Finding) []string {
	var ids []string
	for _, f := range fs {
		ids = append(ids, f.RuleID)
	}
	return ids
}
