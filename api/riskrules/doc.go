// Package riskrules checks scripts against high-risk command rules (BlueKing
// Job's 高危语句规则) before a job is accepted. Each rule is a regular
// expression for some script languages and an action: "scan" records a
// Finding on the job and lets it run, "intercept" refuses the script with an
// error wrapping ErrIntercepted and schemas.ErrInvalid, so surfaces answer
// 400 unchanged (and the bkjob surface can single it out as code 1244019,
// DANGEROUS_SCRIPT_FORBIDDEN_EXECUTION).
//
// # Matching
//
// A script is matched line by line. A line ending in a backslash is joined
// to the next one first, and its findings carry the number of its first
// line. Blank lines and full-line comments (first non-blank character '#',
// which also covers a shebang, for bash, sh and python3 alike) are skipped.
// Everything else on a line is matched as a whole, so a rule finds its
// command after ';', '&&', '|' or inside "$(...)": `echo x; rm -rf /`
// matches, `# rm -rf /` does not.
//
// Rules match anywhere in the line, quoted strings included, because
// `bash -c "rm -rf /"`, `ssh host 'mkfs.ext4 /dev/sdb'` and Python's
// os.system("rm -rf /") run those strings. The price is a documented false
// positive: `echo "rm -rf /"` is intercepted too; rewrite such a line (for
// example, split the words) to run it. Likewise a trailing comment is
// matched as code, and text inside a heredoc or a Python docstring is
// matched as if it ran. Commands spread over several lines without
// backslashes (a fork bomb written over three lines) are not seen.
//
// Patterns are Go RE2 syntax (no backreferences or lookaround), so a check
// takes time linear in the script's size whatever the rules or the input.
//
// # As the shell would run it
//
// A bash or sh script is also parsed (mvdan.cc/sh) and every simple
// command matched again as it would run, with what is known without
// running anything resolved (shell.go): variables assigned constants,
// ${X:-default} of a variable the script never set, $(echo …) of
// constants, command names held in variables, quotes removed and absolute
// paths cleaned. So x=/; rm -rf $x, rm -rf ${X:-/}, r=rm; $r -rf /,
// rm -rf $(echo /) and rm -rf /./ are caught like rm -rf /. Such a finding
// carries the command as resolved. What depends on the host (the
// environment, other commands' output) stays as written.
//
// The rules are a guard rail against mistakes, not a sandbox: a script
// that means harm can always hide it (eval of computed text, a downloaded
// script, base64). Execution accounts, scopes and review are the controls
// for that.
//
// # Destination rules
//
// A rule with "paths" instead of "pattern" guards file steps
// (destinations.go): a step may not write into a protected directory
// itself (/, /etc, /boot, /bin, /sbin, /lib*, /usr, /usr/bin, /usr/sbin,
// /usr/lib*, /proc, /sys, /dev, /run, /var, /root/.ssh, /home/*/.ssh,
// /etc/ssh, /etc/pam.d, ...) nor over a critical file (/etc/passwd,
// /etc/shadow, /etc/sudoers, /etc/ssh/sshd_config, authorized_keys, ...),
// judged on the cleaned destination (/etc/../etc/, //etc, /etc/. are
// /etc) and the names of the files it writes (a glob or REGEX: source
// counts as every name it could produce). Subdirectories stay allowed:
// /etc/myapp, /usr/local/app, /usr/local/bin. Paths are absolute, clean
// path.Match patterns; actions are the same. The shipped scan rule
// system-config-dir records writes into /etc/sudoers.d, /etc/cron.d,
// /etc/systemd/system and the like. Agents refuse the intercept defaults
// again on the destination as it resolves on the host, symlinks followed.
//
// # Rule file
//
// Load reads a JSON file that replaces the defaults (append Defaults() to
// the loaded rules to extend them instead). testdata/defaults.json in this
// package is the default set in this format, a starting point to edit:
//
//	{
//	  "rules": [
//	    {
//	      "id": "no-curl-pipe-sh",
//	      "languages": ["bash", "sh"],
//	      "pattern": "curl[^|]*\\|\\s*(sudo\\s+)?(ba)?sh\\b",
//	      "action": "scan",
//	      "description": "pipes a download into a shell"
//	    }
//	  ]
//	}
//
// id names the rule in findings and errors (letters, digits, '.', '_', '-',
// at most 64, unique); languages is a subset of bash, sh and python3, and
// empty or absent means all of them; pattern is required, unless the rule
// is a destination rule, which has paths instead: {"id": "no-opt",
// "paths": ["/opt", "/srv/*"], "action": "intercept"}; action is "scan"
// or "intercept"; description is shown in findings and errors. Unknown keys
// are an error. New reports every bad rule by id.
//
// # Default rules
//
// Shell rules name no language, because Python scripts run shell commands
// through os.system and subprocess; their argument separators accept quotes
// and commas, so subprocess.run(["rm", "-rf", "/"]) matches like the shell
// form.
//
//	id                     languages  action     catches
//	rm-root                all        intercept  rm with -r/-R/--recursive (any flag order, --no-preserve-root,
//	                                             sudo, /bin/rm, quoted) of /, /*, or a top-level system
//	                                             directory (/etc, /usr, /var, /home, ... every FHS root entry
//	                                             but /tmp), with or without a trailing / or /*
//	mkfs                   all        intercept  mkfs, mkfs.*, mke2fs, mkdosfs, mkntfs given /dev/... or a $variable
//	wipe-device            all        intercept  wipefs -a/-o, blkdiscard, shred of a disk device
//	dd-device              all        intercept  dd with of= a disk device (sd*, hd*, vd*, xvd*, nvme*, mmcblk*,
//	                                             md*, dm-*, /dev/mapper/, /dev/disk/)
//	redirect-device        all        intercept  > or >> onto a disk device, tee to one
//	fork-bomb              all        intercept  :(){ :|:& };: with any name and spacing, the function keyword
//	                                             form, perl's fork while fork, python's while True: os.fork()
//	chmod-chown-root       all        intercept  chmod/chown/chgrp -R of / or a top-level system directory
//	truncate-auth-files    all        intercept  > onto /etc/passwd, shadow, group, gshadow or sudoers (>> is fine)
//	truncate-auth-command  bash, sh   intercept  truncate of /etc/passwd, shadow, group, gshadow or sudoers
//	find-delete-root       bash, sh   intercept  find / (or a top-level system directory) -delete or -exec rm, with no test first
//	copy-onto-device       bash, sh   intercept  cp, mv, install or rsync with a disk device as the destination
//	py-rmtree-root         python3    intercept  shutil.rmtree of / or a top-level system directory
//	py-overwrite-critical  python3    intercept  open() of a disk device or /etc/passwd-like file with w or +
//	rm-var-slash           all        scan       rm -r of "$VAR/" or "$VAR"/*: / when VAR is empty; "${VAR:?}"/
//	                                             is the fix and passes
//	partition-write        all        scan       fdisk, sfdisk, gdisk, cfdisk, sgdisk on a device (not -l, -d,
//	                                             -p); parted mklabel, mkpart, rm, resizepart, set...
//	shutdown-reboot        bash, sh   scan       shutdown, reboot, halt, poweroff, init 0/6, systemctl reboot...
//	                                             in command position: line start, after ; & | ( { ` $( or
//	                                             sudo, then, do, else, exec, nohup, time, xargs (so not in
//	                                             echo "reboot needed", nor in ssh h 'reboot' without sudo)
//	py-shutdown-reboot     python3    scan       the same commands at the start of a Python string
//	crontab-remove         all        scan       crontab -r
//	py-remove-system-file  python3    scan       os.remove/unlink/rmdir, rmtree, Path(...).unlink() of account,
//	                                             mount, name-service or ssh files in /etc, or of anything under
//	                                             /bin, /sbin, /boot, /lib*, /usr/bin, /usr/sbin, /usr/lib*
//	protected-dir          (paths)    intercept  file steps into /, /bin, /boot, /dev, /etc, /lib*, /proc, /root/.ssh,
//	                                             /home/*/.ssh, /run, /sbin, /sys, /usr, /usr/bin, /usr/sbin, /usr/lib*,
//	                                             /var, /etc/ssh, /etc/pam.d, /etc/security, /etc/selinux
//	protected-file         (paths)    intercept  file steps over /etc/passwd, shadow, group, gshadow, sudoers,
//	                                             ssh/sshd_config, fstab, crypttab, hosts, resolv.conf, ld.so.preload,
//	                                             ld.so.conf, /root/.ssh/authorized_keys, /root/.bashrc, /root/.profile
//	system-config-dir      (paths)    scan       file steps into /etc/sudoers.d, cron.d, profile.d, systemd/system,
//	                                             ld.so.conf.d, modprobe.d, sysctl.d
//
// Near misses the defaults let through on purpose: rm -rf /tmp/build,
// rm -rf ./dist, rm -f /etc/foo.conf, dd if=/dev/zero of=/tmp/file,
// dd if=/dev/sda of=disk.img, > /dev/null, mkfs.ext4 disk.img,
// fdisk -l, chown -R app /opt/app, >> /etc/sudoers, systemctl restart.
package riskrules
