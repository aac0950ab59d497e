package riskrules

// Fragments the default patterns are built from. They are RE2 syntax, so a
// rule file can copy them (testdata/defaults.json holds the expanded form).
const (
	// cmd starts a command name anywhere in a line: at the line start or
	// after a character that cannot belong to a longer name, option or path
	// component, so /bin/rm and "rm (a Python string) count and --rm or
	// farm do not.
	cmd = `(?:^|[^\w.-])`
	// cmdPos is a stricter start for names common in prose (reboot, halt):
	// the line start, a shell operator, or a wrapper such as sudo, then an
	// optional directory. Quotes do not count, so echo "reboot needed" is
	// not a reboot.
	cmdPos = `(?:^|[;&|(){}\x60!]|\$\(|\b(?:sudo|then|do|else|exec|nohup|time|xargs)(?:\s+-\S+(?:\s+\w+)?)*\s)\s*(?:[\w./-]*/)?`
	// pyStr starts a command at the opening of a Python string literal.
	pyStr = `['"]\s*(?:sudo\s+)?(?:[\w./-]*/)?`
	// sep separates arguments: blanks or commas, with a quote on either
	// side, so "/" and Python argv lists like ["rm", "-rf", "/"] read like
	// shell, while "$DIR"/* stays one word.
	sep = `['"]?[\s,]+['"]?`
	// arg is one argument; it never crosses ; & | < > ( ), so matching stays
	// inside one simple command.
	arg  = `[^\s'",;&|<>()]+`
	args = `(?:` + sep + arg + `)*?`
	// end closes a name or path: line end, a separator or an operator, or
	// a closing quote followed by one of those (so /"$X" is not a bare /).
	end = "(?:$|[\\s,;&|)\\x60]|['\"](?:$|[\\s,;&|)\\]\\x60]))"
	// topDir lists the top-level system directories (everything in the FHS
	// root but /tmp).
	topDir = `(?:bin|boot|dev|etc|home|lib|lib32|lib64|libx32|media|mnt|opt|proc|root|run|sbin|srv|sys|usr|var)`
	// rootPath is /, /*, or a top-level system directory, optionally with a
	// trailing / or /*.
	rootPath = `/+(?:` + topDir + `)?/*\*?`
	// disk is a whole disk, partition, RAID or device-mapper node.
	disk = `/dev/(?:sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|md\d|md/|dm-\d|mapper/|disk/)`
	// authFile is an account or privilege database in /etc.
	authFile = `/etc/(?:passwd|shadow|group|gshadow|sudoers)`
	// rmRec is rm's recursive flag, alone or bundled (-r, -R, -rf, -fR).
	rmRec = `(?:-[a-zA-Z]*[rR][a-zA-Z]*|--recursive)`
	// chRec is chmod/chown's recursive flag; -r is a mode, not a flag.
	chRec = `(?:-[a-zA-Z]*R[a-zA-Z]*|--recursive)`
	// fdiskArg is an argument other than the read-only -l, -d, -p (list,
	// dump, print) and their long forms.
	fdiskArg = `(?:-(?:[^-\sldp'",;&|<>()]|-(?:[^\sldp'",;&|<>()]|de))[^\s'",;&|<>()]*|[^-\s'",;&|<>()][^\s'",;&|<>()]*)`
	// fnName is a shell function name, which may be as odd as ":".
	fnName = `[^\s(){}|&;<>]+`
	// sysFile is a file the host needs: an account, mount, name-service or
	// ssh file in /etc, or anything under the binary, library and boot
	// directories.
	sysFile = `/+(?:etc/(?:passwd|shadow|group|gshadow|sudoers|fstab|hosts|hostname|resolv\.conf|ld\.so\.\w+|pam\.d|ssh)(?:/[^'"]*)?|(?:bin|sbin|boot|lib\w*|usr/(?:bin|sbin|lib\w*))/[^'"]+)`
	// pyPfx is an optional Python string prefix (r, b, f, rb...).
	pyPfx = `[rRbBuUfF]*`
)

// Defaults returns the shipped rule set, script rules then destination
// rules (DestinationDefaults), a new slice on every call. The package
// comment lists it; testdata/defaults.json holds it as a rule file.
func Defaults() []Rule {
	return append(scriptDefaults(), DestinationDefaults()...)
}

func scriptDefaults() []Rule {
	py := []string{"python3"}
	shells := []string{"bash", "sh"}
	return []Rule{
		{
			ID:          "rm-root",
			Pattern:     cmd + `rm` + args + sep + `(?:` + rmRec + args + sep + rootPath + end + `|` + rootPath + args + sep + rmRec + end + `)`,
			Action:      ActionIntercept,
			Description: "recursive rm of / or a top-level system directory",
		},
		{
			ID:          "mkfs",
			Pattern:     cmd + `(?:mkfs(?:\.\w+)?|mke2fs|mkdosfs|mkntfs)` + args + sep + `(?:/dev/|\$)`,
			Action:      ActionIntercept,
			Description: "creates a filesystem on a device",
		},
		{
			ID: "wipe-device",
			Pattern: cmd + `(?:wipefs` + args + sep + `(?:-[a-zA-Z]*[ao][a-zA-Z]*|--all|--offset)` + end +
				`|blkdiscard` + args + sep + `(?:/dev/|\$)` +
				`|shred` + args + sep + disk + `)`,
			Action:      ActionIntercept,
			Description: "erases a device or its filesystem signatures",
		},
		{
			ID:      "dd-device",
			Pattern: cmd + `dd` + args + sep + `of=["']?` + disk,
			Action:  ActionIntercept,
			// dd reading a disk (if=/dev/sda) is fine; writing one is not.
			Description: "dd writing onto a disk device",
		},
		{
			ID:          "redirect-device",
			Pattern:     `>\|?\s*["']?` + disk + `|` + cmd + `tee` + args + sep + disk,
			Action:      ActionIntercept,
			Description: "output written onto a disk device",
		},
		{
			ID: "fork-bomb",
			Pattern: `(?:function\s+)?` + fnName + `\s*\(\s*\)\s*\{\s*` + fnName + `\s*\|\s*` + fnName + `\s*&\s*;?\s*\}` +
				`|\bfunction\s+` + fnName + `\s*\{\s*` + fnName + `\s*\|\s*` + fnName + `\s*&\s*;?\s*\}` +
				`|\bfork\s+while\s+fork\b|\bwhile\s*(?:True|1)\s*:\s*os\.fork\(\)`,
			Action:      ActionIntercept,
			Description: "fork bomb",
		},
		{
			ID:          "chmod-chown-root",
			Pattern:     cmd + `(?:chmod|chown|chgrp)` + args + sep + `(?:` + chRec + args + sep + rootPath + end + `|` + rootPath + args + sep + chRec + end + `)`,
			Action:      ActionIntercept,
			Description: "recursive chmod/chown of / or a top-level system directory",
		},
		{
			ID:          "truncate-auth-files",
			Pattern:     `(?:^|[^>])>\|?\s*["']?` + authFile + end,
			Action:      ActionIntercept,
			Description: "overwrites /etc/passwd, shadow, group or sudoers",
		},
		{
			ID:        "truncate-auth-command",
			Languages: shells,
			Pattern:   cmd + `truncate` + args + sep + authFile + end,
			Action:    ActionIntercept,
			// the same harm as > /etc/passwd, by a command
			Description: "truncates /etc/passwd, shadow, group or sudoers",
		},
		{
			ID:        "find-delete-root",
			Languages: shells,
			// find / with no test before -delete (or -exec rm) deletes
			// everything it walks; a -name or -type filter is a cleanup
			Pattern: cmd + `find` + sep + rootPath + `(?:` + sep + `(?:-xdev|-mount|-depth|-ignore_readdir_race|-(?:max|min)depth` + sep + `\d+))*` +
				sep + `(?:-delete|-exec` + sep + `(?:/bin/|/usr/bin/)?rm)` + end,
			Action:      ActionIntercept,
			Description: "find deleting every file under / or a top-level system directory",
		},
		{
			ID:        "copy-onto-device",
			Languages: shells,
			// the disk is the last operand: the destination
			Pattern:     cmd + `(?:cp|mv|install|rsync)` + args + sep + disk + `[^\s'",;&|<>()]*['"]?\s*(?:$|[;&|)\x60])`,
			Action:      ActionIntercept,
			Description: "copies onto a disk device",
		},
		{
			ID:          "py-rmtree-root",
			Languages:   py,
			Pattern:     `\brmtree\(\s*` + pyPfx + `['"]/+(?:` + topDir + `)?/*['"]`,
			Action:      ActionIntercept,
			Description: "shutil.rmtree of / or a top-level system directory",
		},
		{
			ID:        "py-overwrite-critical",
			Languages: py,
			Pattern: `\bopen\(\s*` + pyPfx + `['"](?:` + disk + `[^'"]*|` + authFile + `)['"]\s*,\s*(?:mode\s*=\s*)?` +
				pyPfx + `['"][^'"]*[w+]`,
			Action:      ActionIntercept,
			Description: "opens a disk device or /etc/passwd-like file for writing",
		},
		{
			ID:          "rm-var-slash",
			Pattern:     cmd + `rm` + args + sep + rmRec + args + sep + `\$\{?\w+\}?["']?/+["']?\*?` + end,
			Action:      ActionScan,
			Description: `recursive rm of "$VAR/": deletes / when VAR is empty (write ${VAR:?}/)`,
		},
		{
			ID: "partition-write",
			Pattern: cmd + `(?:fdisk|sfdisk|gdisk|cfdisk|sgdisk)(?:` + sep + fdiskArg + `)*?` + sep + `/dev/` +
				`|` + cmd + `parted` + args + sep + `(?:mklabel|mktable|mkpart|mkpartfs|resizepart|resize|rm|rescue|set|toggle|name|disk_set|disk_toggle)` + end,
			Action:      ActionScan,
			Description: "may change a disk's partition table",
		},
		{
			ID:          "shutdown-reboot",
			Languages:   shells,
			Pattern:     cmdPos + `(?:shutdown|reboot|halt|poweroff|(?:tel)?init` + sep + `[06]|systemctl` + args + sep + `(?:reboot|poweroff|halt|kexec|soft-reboot))` + end,
			Action:      ActionScan,
			Description: "shuts down or reboots the host",
		},
		{
			ID:          "py-shutdown-reboot",
			Languages:   py,
			Pattern:     pyStr + `(?:shutdown|reboot|halt|poweroff|(?:tel)?init` + sep + `[06]|systemctl` + args + sep + `(?:reboot|poweroff|halt|kexec|soft-reboot))` + end,
			Action:      ActionScan,
			Description: "shuts down or reboots the host",
		},
		{
			ID:          "crontab-remove",
			Pattern:     cmd + `crontab` + args + sep + `-[a-zA-Z]*r[a-zA-Z]*` + end,
			Action:      ActionScan,
			Description: "crontab -r removes the whole crontab",
		},
		{
			ID:        "py-remove-system-file",
			Languages: py,
			Pattern: `(?:\bos\.(?:remove|unlink|rmdir|removedirs)|\brmtree)\(\s*` + pyPfx + `['"]` + sysFile + `['"]` +
				`|\bPath\(\s*` + pyPfx + `['"]` + sysFile + `['"]\s*\)\.(?:unlink|rmdir)\(`,
			Action:      ActionScan,
			Description: "deletes a system file",
		},
	}
}
