#!/usr/bin/env bash
# Helper of the xfs image for docker-compose.yml.
#
#   xfs-docker init     once: CAs, certificates, OSD UUIDs and every TOML file into $XFS_ETC
#   xfs-docker client   wait for the grid, create the home volume if missing, mount it
#
# The MRC and the OSDs need no helper: they run `xfs mrc|osd --config $XFS_ETC/<role>.toml`.
set -euo pipefail

XFS_ETC=${XFS_ETC:-/etc/xfs}              # shared volume: CAs, certificates, configs
XFS_DATA=${XFS_DATA:-/var/lib/xfs}        # per-role data volumes are mounted below it
XFS_VO=${XFS_VO:-physics}                 # the VO of the users
XFS_USER=${XFS_USER:-alice}               # the user the client container acts as (uid 0)
XFS_OSDS=${XFS_OSDS:-3}
MRC_PORT=${MRC_PORT:-32636}
OSD_PORT=${OSD_PORT:-32640}
MRC_ADDR=${MRC_ADDR:-mrc:${MRC_PORT}}
VOLUME=${XFS_VOLUME:-home-${XFS_USER}}
MOUNTPOINT=${XFS_MOUNTPOINT:-/mnt/xfs}

uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

refresh_crls() {
    # Every CA's CRL must be current or the CA vouches for nobody: re-issue them on each
    # start (operators of a long-running grid also run this from cron).
    local dir
    for dir in "$XFS_ETC/ca/services" "$XFS_ETC/ca/$XFS_VO"; do
        xfs ca crl --dir "$dir" --days 30 >/dev/null
        chmod 0644 "$dir/crl.pem"
    done
}

init() {
    if [ -f "$XFS_ETC/.initialised" ]; then
        echo "xfs-docker: $XFS_ETC is already initialised"
        refresh_crls
        return
    fi
    umask 077
    mkdir -p "$XFS_ETC"
    cd "$XFS_ETC"
    local trust="[\"$XFS_ETC/ca/services/ca.crt\", \"$XFS_ETC/ca/$XFS_VO/ca.crt\"]"

    [ -f ca/services/ca.crt ] || xfs ca init-services --dir ca/services
    [ -f "ca/$XFS_VO/ca.crt" ] || xfs ca init --dir "ca/$XFS_VO" --vo "$XFS_VO"

    # The MRC: any UUID names it.
    local mrc_uuid
    mrc_uuid=$(uuid)
    rm -rf mrc && xfs ca issue-service --ca ca/services --kind mrc --uuid "$mrc_uuid" \
        --host mrc --out mrc
    cat > mrc.toml <<EOF
data_dir = "$XFS_DATA/mrc"
host = "0.0.0.0"
port = $MRC_PORT

[tls]
cert = "$XFS_ETC/mrc/mrc-$mrc_uuid.crt"
key = "$XFS_ETC/mrc/mrc-$mrc_uuid.key"
trust = $trust
EOF

    # The OSDs: the certificate must name the UUID of the OSD's store, so the UUID is
    # written into the (still empty) data directory before the OSD's first start.
    local i osd_uuid
    for i in $(seq 1 "$XFS_OSDS"); do
        mkdir -p "$XFS_DATA/osd$i"
        if [ -f "$XFS_DATA/osd$i/UUID" ]; then
            osd_uuid=$(cat "$XFS_DATA/osd$i/UUID")
        else
            osd_uuid=$(uuid)
            echo "$osd_uuid" > "$XFS_DATA/osd$i/UUID"
        fi
        rm -rf "osd$i" && xfs ca issue-service --ca ca/services --kind osd \
            --uuid "$osd_uuid" --host "osd$i" --out "osd$i"
        # host is both the address the OSD listens on and the one it registers with the
        # MRC, so it must be the name clients reach it by: the compose service name.
        cat > "osd$i.toml" <<EOF
data_dir = "$XFS_DATA/osd$i"
mrc = "$MRC_ADDR"
host = "osd$i"
port = $OSD_PORT
labels = { host = "osd$i" }

[tls]
cert = "$XFS_ETC/osd$i/osd-$osd_uuid.crt"
key = "$XFS_ETC/osd$i/osd-$osd_uuid.key"
trust = $trust
EOF
    done

    # Users: an administrator (role super: may create volumes) and the user whose
    # credential local uid 0 of the client container uses.
    xfs ca issue-user --ca "ca/$XFS_VO" --name admin --role super --out admin
    xfs ca issue-user --ca "ca/$XFS_VO" --name "$XFS_USER" --group users --out users
    mkdir -p credentials/0
    install -m 0644 "users/$XFS_USER.crt" credentials/0/cert.pem
    install -m 0600 "users/$XFS_USER.key" credentials/0/key.pem

    cat > gridmap <<EOF
# grid principal / VO group        local account / group in the client container
$XFS_USER@$XFS_VO                   root
group:users@$XFS_VO                 root
EOF
    cat > mount.toml <<EOF
mrc = "$MRC_ADDR"
volume = "$VOLUME"
mountpoint = "$MOUNTPOINT"
trust = $trust
credentials = "$XFS_ETC/credentials"
identity_map = "$XFS_ETC/gridmap"
vo = "$XFS_VO"
allow_other = true
EOF
    chmod 0644 ./*.toml gridmap ca/*/ca.crt
    refresh_crls
    touch .initialised
    echo "xfs-docker: initialised $XFS_ETC (VO $XFS_VO, user $XFS_USER@$XFS_VO)"
}

admin() {
    # An admin command against the MRC with the administrator's certificate.
    local cmd=("$@")
    xfs "${cmd[@]}" --mrc "$MRC_ADDR" --cert "$XFS_ETC/admin/admin.crt" \
        --key "$XFS_ETC/admin/admin.key" \
        --trust "$XFS_ETC/ca/services/ca.crt" --trust "$XFS_ETC/ca/$XFS_VO/ca.crt"
}

client() {
    echo "xfs-docker: waiting for the MRC and $XFS_OSDS OSDs at $MRC_ADDR"
    local alive="import json, sys; s = json.load(sys.stdin); "
    alive+="sys.exit(0 if sum(o['alive'] for o in s['osds']) >= $XFS_OSDS else 1)"
    for _ in $(seq 1 120); do
        if admin status --json 2>/dev/null | python3 -c "$alive"; then
            break
        fi
        sleep 1
    done
    local volumes
    volumes=$(admin volume list | cut -f1)
    if ! grep -qx "$VOLUME" <<<"$volumes"; then
        admin volume create "$VOLUME" --owner "$XFS_USER@$XFS_VO" \
            --group "users@$XFS_VO" --mode 700 --width "$XFS_OSDS"
    fi
    mkdir -p "$MOUNTPOINT"
    exec xfs mount --config "$XFS_ETC/mount.toml"
}

case "${1:-}" in
    init) init ;;
    client) client ;;
    *)
        echo "usage: xfs-docker init|client" >&2
        exit 2
        ;;
esac
